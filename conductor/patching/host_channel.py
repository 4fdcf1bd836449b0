"""Host-mode agents: installed hosts talking to the patch controller over the agent API.

StarlingX's patch agent talks to its controller over multicast UDP; here the
host runs ``metalcast-agent host`` and uses the authenticated ramdisk protocol
instead (specs/starlingx-patching.md §4.1 replaced by api/v1/ramdisk.py):

* **Lookup** ``GET /v1/lookup?addresses=..&node_uuid=..&agent_mode=host`` is
  answered for ``active`` nodes only (Ironic agents never send ``agent_mode``, so
  their behaviour is unchanged). It mints a *host-agent* token once and keeps it
  in ``driver_internal_info.host_agent_token``, apart from the ramdisk's
  ``agent_secret_token`` (masked in every view, as every ``*token*`` key); a
  repeat lookup gets ``"******"``. The agent keeps its token in a file under its
  state dir, so restarts keep working. A token belongs to one stay in ``active``
  (``host_agent_since`` = the node's ``provision_updated_at`` when it was minted):
  after an undeploy and a new deploy or adopt, the next lookup mints a new one.
  An operator resets it with ``DELETE /v1/nodes/<node>/host_agent_token`` (API
  credentials needed; ``driver_internal_info`` is read-only in the API, as in
  Ironic): the agent's next heartbeat is refused and it looks up again.
* **Heartbeat** ``POST /v1/heartbeat/<node>`` with ``agent_mode: "host"`` and a
  ``patching`` report (the dict of ``PatchEngine.report()``) is checked like a
  ramdisk heartbeat (token, https callback unless ``[agent] require_tls`` is
  false, PEM certificate) before anything is stored, then the report goes to the
  patch controller under the node's *name* (the hostname) and the callback host
  (the IP). A host agent may come back with a new URL and certificate (it
  restarted or the host rebooted): its token authenticates it, so the new ones
  replace the old ones.
* **Commands** (``HostCommands``, the patch controller's host channel) go to the
  agent's HTTPS command API, pinned to the certificate of its last heartbeat:
  ``patching.install {"force", "locked", "request_id"}`` (``locked`` = the node is
  in maintenance, metalcast's StarlingX ``host-lock``) and ``patching.query``
  (re-report now; StarlingX's HELLO_AGENT after apply and remove). Until the
  report that answers an install request arrives (it carries ``install_request`` =
  that ``request_id``), the host shows ``installing`` (recorded in the database by
  conductor/patching/host_states.py, so whichever conductor takes the report knows
  it), and ``sw-patch host-install`` never mistakes a report sent before the
  install for its result.

The objects are built in this order, each with its collaborators: ``HostCommands``,
then the PatchController (given it as ``host_channel``), then ``HostAgents``
(given the controller).
"""
from __future__ import annotations

import dataclasses
import hmac
import logging
import secrets as pysecrets
import threading
from concurrent.futures import ThreadPoolExecutor

import requests

from conductor import errors, states
from conductor.drivers.deploy.client import AgentClient, ca_file
from conductor.drivers.deploy.heartbeat import (
    TOKEN_ERROR,
    Heartbeat,
    check_callback_url,
    check_pem_certificate,
)
from conductor.patching.hosts import HostReport
from conductor.secrets import MASK

LOG = logging.getLogger(__name__)

HOST_MODE = "host"
ACTIVE = states.State.ACTIVE.value
TOKEN_KEY, URL_KEY, CA_KEY, VERSION_KEY, SINCE_KEY = (
    "host_agent_token", "host_agent_url", "host_agent_verify_ca", "host_agent_version",
    "host_agent_since")
#: patching.query (HELLO_AGENT) fan-out: parallel requests, seconds each.
NOTIFY_WORKERS, NOTIFY_TIMEOUT = 8, 5.0
#: Report field -> the type it must have (HostReport's fields; hostname/ip are ours).
REPORT_TYPES: dict[str, type | tuple[type, ...]] = {
    "nodetype": str, "subfunctions": list, "sw_version": str,
    "out_of_date": bool, "installed": dict, "to_remove": list,
    "missing_pkgs": list, "duplicated_pkgs": dict, "state": str,
    "node_is_patched": bool, "patch_failed": bool,
    "install_request": (str, type(None))}


class HostAgentClient(AgentClient):
    """The command client of a node's *host* agent (host_agent_* fields)."""

    def __init__(self, node, settings, session=None):
        info = node.driver_internal_info or {}
        if not info.get(URL_KEY) or not info.get(TOKEN_KEY):
            raise errors.AgentConnectionFailed(
                reason=f"host {node.name} ({node.uuid}) has no host agent yet: start "
                       "metalcast-agent host on it (no host-mode heartbeat received)")
        self.node_uuid = node.uuid
        self.url = info[URL_KEY].rstrip("/") + "/v1/commands/"
        self.token = info[TOKEN_KEY]
        self.settings = settings
        self.session = session or requests.Session()
        self.verify = ca_file(settings.data_path, info.get(CA_KEY)) or True


def check_report(report) -> dict:
    """The ``patching`` dict of a heartbeat, type-checked (400 on anything odd)."""
    if not isinstance(report, dict):
        raise errors.InvalidParameter('Field "patching" must be a JSON object.')
    for key, kind in REPORT_TYPES.items():
        if key in report and not isinstance(report[key], kind):
            raise errors.InvalidParameter(f'Patching report field "{key}" has the wrong type.')
    if not all(isinstance(k, str) and isinstance(v, str)
               for k, v in report.get("installed", {}).items()):
        raise errors.InvalidParameter('Patching report field "installed" must map '
                                      "package names to version strings.")
    return report


class HostCommands:
    """Commands to host agents: what the patch controller sends (its host channel)."""

    def __init__(self, store, settings):
        self.store, self.settings = store, settings

    def install(self, hostname: str, force: bool, request_id: str) -> None:
        """Send ``patching.install`` to the host's agent; its reports carry
        ``install_request`` = ``request_id`` once the install has run."""
        node = self.store.get_node(hostname)
        if node.provision_state != ACTIVE:
            raise errors.Conflict(f"host {hostname} is {node.provision_state}, not active")
        HostAgentClient(node, self.settings).command(
            "patching.install", {"force": bool(force), "locked": bool(node.maintenance),
                                 "request_id": request_id}, wait=False)
        LOG.info("Node %s: install request %s sent to host %s (force %s, locked %s)",
                 node.uuid, request_id, hostname, force, node.maintenance)

    def notify_all(self) -> None:
        """Ask every host agent to report now (HELLO_AGENT), in the background."""
        threading.Thread(target=self._notify, name="hello-agents", daemon=True).start()

    def _notify(self) -> None:
        # One attempt and a short timeout each, a few at a time: a dead agent must not
        # delay the others, and the next heartbeat reports anyway.
        agent = dataclasses.replace(self.settings.agent, max_command_attempts=1,
                                    command_timeout=min(
                                        NOTIFY_TIMEOUT, self.settings.agent.command_timeout))
        quick = dataclasses.replace(self.settings, agent=agent)
        nodes = [node for node in self.store.list_nodes({"provision_state": ACTIVE})
                 if (node.driver_internal_info or {}).get(URL_KEY)]
        with ThreadPoolExecutor(NOTIFY_WORKERS, thread_name_prefix="hello-agent") as pool:
            for node in nodes:
                pool.submit(self._query, node, quick)

    @staticmethod
    def _query(node, settings) -> None:
        try:
            HostAgentClient(node, settings).command("patching.query", {})
        except errors.MetalcastError as exc:   # best effort: the heartbeat follows
            LOG.info("Node %s: patching.query not delivered: %s", node.uuid, exc)


class HostAgents:
    """Lookup and heartbeat of host-mode agents; reports go to ``patching`` (the
    PatchController, None when patching is disabled)."""

    def __init__(self, store, settings, patching=None):
        self.store, self.settings, self.patching = store, settings, patching
        self.host = settings.conductor.host

    # -- lookup -----------------------------------------------------------------
    def lookup(self, node):
        """(node, token or MASK) for the host agent of an active node; 404 otherwise."""
        if node.provision_state != ACTIVE:
            LOG.error("Host-mode lookup refused for node %s in provision state %s",
                      node.uuid, node.provision_state)
            raise errors.NotFound()
        if self.patching is not None:
            self.patching.ensure_update_repo()
        if _token(node):
            LOG.warning("Node %s: repeat host-mode lookup, the token is not sent again",
                        node.uuid)
            return node, MASK
        token = pysecrets.token_urlsafe(32)
        node = self._update_info(node, {TOKEN_KEY: token, SINCE_KEY: _since(node)},
                                 only_if=lambda info: not _token(node, info))
        if node.driver_internal_info.get(TOKEN_KEY) != token:
            return node, MASK       # another lookup won the race
        LOG.info("Node %s: host agent token issued at lookup", node.uuid)
        return node, token

    def reset_token(self, ident: str) -> None:
        """Forget the host agent's token and URL (``DELETE /v1/nodes/<node>/host_agent_token``):
        the agent's next heartbeat is refused, it looks up again and gets a new one."""
        node = self.store.get_node(ident)
        self.store.reserve(node, self.host)
        try:
            info = {k: v for k, v in (self.store.get_node_by_id(node.id)
                                      .driver_internal_info or {}).items()
                    if k not in (TOKEN_KEY, SINCE_KEY, URL_KEY, CA_KEY, VERSION_KEY)}
        except BaseException:
            self.store.release(node.id, self.host)
            raise
        self.store.release(node.id, self.host, {"driver_internal_info": info})
        LOG.info("Node %s: host agent token reset by the operator", node.uuid)

    def _update_info(self, node, values: dict, only_if=None):
        """Merge ``values`` into driver_internal_info under the node lock."""
        self.store.reserve(node, self.host, expect={"provision_state": ACTIVE})
        update = {}
        try:
            info = dict(self.store.get_node_by_id(node.id).driver_internal_info or {})
            if only_if is None or only_if(info):
                info.update(values)
                update = {"driver_internal_info": info}
        finally:
            self.store.release(node.id, self.host, update)
        return self.store.get_node_by_id(node.id)

    # -- heartbeat --------------------------------------------------------------
    def heartbeat(self, ident: str, beat: Heartbeat, report: dict | None) -> None:
        """Check, record (URL/certificate when they change), pass the report on."""
        node = self.store.get_node(ident)
        host = self._check(node, beat)
        parsed = None if report is None else self._parse(node, host, report)
        info = node.driver_internal_info or {}
        changed = {key: value for key, value in ((URL_KEY, beat.callback_url),
                                                 (CA_KEY, beat.agent_verify_ca),
                                                 (VERSION_KEY, beat.agent_version))
                   if value and info.get(key) != value}
        if changed:
            LOG.info("Node %s: host agent at %s (version %s)", node.uuid,
                     beat.callback_url, beat.agent_version)
            node = self._update_info(node, changed)
            if URL_KEY in changed and self.patching is not None:
                self.patching.agent_restarted(node.name)   # no install is running
        if parsed is None or report is None or self.patching is None:
            return
        self.patching.report_host(parsed, report.get("install_request"))

    @staticmethod
    def _parse(node, host: str, report):
        """The HostReport of a heartbeat's ``patching`` dict (400 when malformed)."""
        check_report(report)
        try:
            return HostReport.from_dict(dict(report, hostname=node.name, ip=host))
        except (TypeError, ValueError) as exc:
            raise errors.InvalidParameter(f"Invalid patching report: {exc}") from None

    def _check(self, node, beat: Heartbeat) -> str:
        """Every reason to refuse a host heartbeat; the callback host (the host's IP)."""
        stored = _token(node)
        if node.provision_state != ACTIVE or not stored or \
                not isinstance(beat.agent_token, str) or \
                not hmac.compare_digest(stored.encode(), beat.agent_token.encode()):
            LOG.error("Node %s: host heartbeat with an invalid or missing token (state %s)",
                      node.uuid, node.provision_state)
            raise errors.InvalidParameter(TOKEN_ERROR)
        if not node.name:
            raise errors.InvalidParameter(f"Node {node.uuid} has no name: a host agent's "
                                          "node name is its hostname; set one.")
        if not beat.agent_version:
            raise errors.InvalidParameter('Field "agent_version" is required in a heartbeat.')
        parsed = check_callback_url(beat.callback_url, self.settings.agent.require_tls)
        if beat.agent_verify_ca is not None:
            check_pem_certificate(beat.agent_verify_ca)
        return parsed.hostname or ""


def _since(node) -> str:
    return str(node.provision_updated_at)


def _token(node, info: dict | None = None) -> str | None:
    """The host-agent token of the node's current stay in active, if any."""
    info = node.driver_internal_info or {} if info is None else info
    if info.get(SINCE_KEY) != _since(node):
        return None
    return info.get(TOKEN_KEY) or None
