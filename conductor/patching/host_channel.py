"""Host-mode agents: installed hosts talking to the patch controller over the agent API.

StarlingX's patch agent talks to its controller over multicast UDP; here the
host runs ``metalcast-agent host`` and uses the authenticated ramdisk protocol
instead (specs/starlingx-patching.md §4.1 replaced by api/v1/ramdisk.py):

* **Token** — issued by an *authenticated* API call, Ironic's node vendor passthru
  ``POST /v1/nodes/<node>/vendor_passthru?method=issue_host_agent_token`` (also
  ``baremetal node passthru call <node> issue_host_agent_token`` and ``metalcast
  host token <node>``), for ``active`` nodes only; it answers ``{token,
  node_uuid}`` once. Issuing a new token revokes the previous one. The server keeps
  only its SHA-256 and, Fernet-encrypted, the command credential derived from it
  (conductor/drivers/internal_info.py, ``HostAgentRecord``). A token belongs to one
  stay in ``active`` (``host_agent_since``): after an undeploy and a new deploy or
  adopt it is stale. There is no host-mode lookup: ``GET /v1/lookup`` never answers
  for an active node (as Ironic), whoever asks.
* **Binding** — the first heartbeat with a fresh token binds it to the agent's
  callback *host* and its TLS certificate (``agent_verify_ca``). Later heartbeats
  must come from the same host with the same certificate (the port may change: the
  agent restarted); anything else is refused and changes nothing. To move an agent
  (new address, new certificate, a reinstalled host) an operator issues a new token
  and gives it to the agent: that is the whole rebinding procedure.
  ``DELETE /v1/nodes/<node>/host_agent_token`` revokes without issuing.
* **Heartbeat** ``POST /v1/heartbeat/<node>`` with ``agent_mode: "host"`` and a
  ``patching`` report (the dict of ``PatchEngine.report()``) is checked (token,
  binding, https callback unless ``[agent] require_tls`` is false, PEM certificate)
  before anything is stored, then the report goes to the patch controller under the
  node's *name* (the hostname) and the callback host (the IP).
* **Commands** (``HostCommands``, the patch controller's host channel) go to the
  agent's HTTPS command API, pinned to the bound certificate, with the derived
  command credential: ``patching.install {"force", "locked", "request_id"}``
  (``locked`` = the node is in maintenance, metalcast's StarlingX ``host-lock``) and
  ``patching.query`` (re-report now; StarlingX's HELLO_AGENT after apply and
  remove). Until the report that answers an install request arrives (it carries
  ``install_request`` = that ``request_id``), the host shows ``installing``
  (recorded in the database by conductor/patching/host_states.py, so whichever
  conductor takes the report knows it), and ``sw-patch host-install`` never
  mistakes a report sent before the install for its result.
* **Audit** (StarlingX's HELLO_AGENT, sent at start and every 30 s there): each
  conductor asks the host agents of the nodes the hash ring maps to it to re-report,
  every ``[patching] host_audit_interval`` (``HostCommands.audit``, a periodic task of
  the workers) and at once after an apply or remove it ran (``notify_all``); a node
  mapped to another live conductor is that one's to ask, so each agent is asked by
  one conductor, and by the new owner after a takeover.

The objects are built in this order, each with its collaborators: ``HostCommands``,
then the PatchController (given it as ``host_channel``), then ``HostAgents``
(given the controller).
"""
from __future__ import annotations

import dataclasses
import logging
import secrets as pysecrets
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from conductor import errors, states
from conductor.cluster.ring import runs_here
from conductor.drivers import internal_info
from conductor.drivers.deploy.client import AgentClient
from conductor.drivers.deploy.heartbeat import (
    TOKEN_ERROR,
    Heartbeat,
    check_callback_url,
    check_pem_certificate,
)
from conductor.drivers.internal_info import HostAgentRecord
from conductor.patching.hosts import HostReport

if TYPE_CHECKING:
    from conductor.db.records import Node
    from conductor.secrets import Cipher

LOG = logging.getLogger(__name__)

ACTIVE = states.State.ACTIVE.value
#: Refusals of a heartbeat that does not match the token's binding.
HOST_CHANGED = ('Detected change in host agent provided "callback_url" host: the token is '
                "bound to another host; issue a new token to move the agent.")
CERT_CHANGED = ('Detected change in host agent provided "agent_verify_ca": the token is '
                "bound to another certificate; issue a new token to rebind the agent.")
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
    """The command client of a node's *host* agent (its HostAgentRecord)."""

    @staticmethod
    def _endpoint(node, cipher: Cipher | None) -> tuple[str, str, str | None]:
        agent = HostAgentRecord.of(node)
        if not agent.reachable or not agent.current(node) or agent.url is None:
            raise errors.AgentConnectionFailed(
                reason=f"host {node.name} ({node.uuid}) has no host agent yet: issue its "
                       "token (metalcast host token NODE) and start metalcast-agent host "
                       "on it (no host-mode heartbeat received with a current token)")
        return agent.url, agent.command_credential(cipher), agent.verify_ca


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

    def __init__(self, store, settings, cipher: Cipher | None = None,
                 owner_of: Callable[[Node], str | None] | None = None):
        self.store, self.settings, self.cipher = store, settings, cipher
        #: The node's conductor by the hash ring: only the agents of the nodes it maps
        #: to this conductor are asked here (None: no ring, one conductor).
        self.owner_of = owner_of

    def install(self, hostname: str, force: bool, request_id: str) -> None:
        """Send ``patching.install`` to the host's agent; its reports carry
        ``install_request`` = ``request_id`` once the install has run."""
        node = self.store.get_node(hostname)
        if node.provision_state != ACTIVE:
            raise errors.Conflict(f"host {hostname} is {node.provision_state}, not active")
        HostAgentClient(node, self.settings, cipher=self.cipher).command(
            "patching.install", {"force": bool(force), "locked": bool(node.maintenance),
                                 "request_id": request_id}, wait=False)
        LOG.info("Node %s: install request %s sent to host %s (force %s, locked %s)",
                 node.uuid, request_id, hostname, force, node.maintenance)

    def notify_all(self) -> None:
        """Ask this conductor's host agents to report now (HELLO_AGENT), in the
        background; the other conductors' audits ask theirs."""
        threading.Thread(target=self.audit, name="hello-agents", daemon=True).start()

    def audit(self) -> list[str]:
        """Ask the host agents of the nodes this conductor runs to report now; the
        UUIDs of the nodes asked."""
        # One attempt and a short timeout each, a few at a time: a dead agent must not
        # delay the others, and the next heartbeat reports anyway.
        agent = dataclasses.replace(self.settings.agent, max_command_attempts=1,
                                    command_timeout=min(
                                        NOTIFY_TIMEOUT, self.settings.agent.command_timeout))
        quick = dataclasses.replace(self.settings, agent=agent)
        # The database picks the nodes with an agent's URL and credential: reading every
        # active node each round made a conductor's CPU and RSS grow with the fleet.
        wanted = {"provision_state": ACTIVE,
                  "internal_info_keys": internal_info.HOST_AGENT_REACHABLE_KEYS}
        nodes = [node for node in self.store.list_nodes(wanted)
                 if HostAgentRecord.of(node).reachable and self._mine(node)]
        with ThreadPoolExecutor(NOTIFY_WORKERS, thread_name_prefix="hello-agent") as pool:
            for node in nodes:
                pool.submit(self._query, node, quick)
        return [node.uuid for node in nodes]

    def _mine(self, node) -> bool:
        owner = self.owner_of(node) if self.owner_of is not None else None
        return runs_here(owner, node.conductor_affinity, self.settings.conductor.host)

    def _query(self, node, settings) -> None:
        try:
            HostAgentClient(node, settings, cipher=self.cipher).command("patching.query", {})
        except errors.MetalcastError as exc:   # best effort: the heartbeat follows
            LOG.info("Node %s: patching.query not delivered: %s", node.uuid, exc)


class HostAgents:
    """Token issue, revocation and heartbeats of host-mode agents; reports go to
    ``patching`` (the PatchController, None when patching is disabled)."""

    def __init__(self, store, settings, patching=None, cipher: Cipher | None = None):
        self.store, self.settings, self.patching = store, settings, patching
        self.host = settings.conductor.host
        #: Encrypts the command credential kept for each issued token.
        self.cipher = cipher

    # -- tokens (authenticated API) -----------------------------------------------
    def issue_token(self, ident: str):
        """(node, token): a new host-agent token for an active node, shown only now;
        the previous token and its binding are revoked."""
        node = self.store.get_node(ident)
        if node.provision_state != ACTIVE:
            raise errors.Conflict(f"Node {node.uuid} is in provision state "
                                  f"{node.provision_state}: a host-agent token is issued "
                                  "for active nodes only.")
        if self.patching is not None:
            self.patching.ensure_update_repo()     # the agent's first report needs it
        token = pysecrets.token_urlsafe(32)
        node = self._update_info(node, lambda current, info: internal_info.with_host_token(
            info, token, _since(current), self.cipher))
        LOG.info("Node %s: host agent token issued (any previous one revoked)", node.uuid)
        return node, token

    def reset_token(self, ident: str) -> None:
        """Revoke the host agent's token and binding (``DELETE
        /v1/nodes/<node>/host_agent_token``): its next heartbeat is refused until an
        operator issues a new token."""
        node = self.store.get_node(ident)
        self.store.reserve(node, self.host)
        try:
            info = internal_info.without_host_agent(
                self.store.get_node_by_id(node.id).driver_internal_info)
        except BaseException:
            self.store.release(node.id, self.host)
            raise
        self.store.release(node.id, self.host, {"driver_internal_info": info})
        LOG.info("Node %s: host agent token revoked by the operator", node.uuid)

    def _update_info(self, node, change: Callable[..., dict | None]):
        """driver_internal_info = ``change(node, info)`` under the node lock (no
        write when it returns None); the node as it is then."""
        self.store.reserve(node, self.host, expect={"provision_state": ACTIVE})
        update = {}
        try:
            current = self.store.get_node_by_id(node.id)
            info = change(current, dict(current.driver_internal_info or {}))
            if info is not None:
                update = {"driver_internal_info": info}
        finally:
            self.store.release(node.id, self.host, update)
        return self.store.get_node_by_id(node.id)

    # -- heartbeat --------------------------------------------------------------
    def heartbeat(self, ident: str, beat: Heartbeat, report: dict | None) -> None:
        """Check (token, binding), record URL/certificate when they change, pass the
        report on."""
        node = self.store.get_node(ident)
        host = self._check(node, beat)
        parsed = None if report is None else self._parse(node, host, report)
        agent = HostAgentRecord.of(node)
        if not agent.bound or (agent.url, agent.version) != (beat.callback_url,
                                                              beat.agent_version):
            LOG.info("Node %s: host agent at %s (version %s)%s", node.uuid,
                     beat.callback_url, beat.agent_version,
                     "" if agent.bound else ": token bound to this host and certificate")
            node = self._update_info(node, lambda current, info: self._record(
                current, info, beat, host))
            if agent.url != beat.callback_url and self.patching is not None:
                self.patching.agent_restarted(node.name)   # no install is running
        if parsed is None or report is None or self.patching is None:
            return
        self.patching.report_host(parsed, report.get("install_request"))

    def _record(self, node, info: dict, beat: Heartbeat, host: str) -> dict:
        """``info`` (the locked ``node``'s) with the heartbeat's URL, certificate and
        version, checked again under the lock: another heartbeat may have bound the
        token, or a new token may have been issued, since the first check."""
        self._check_binding(node, HostAgentRecord.of(node), beat, host)
        return internal_info.with_host_heartbeat(info, beat.callback_url,
                                                 beat.agent_verify_ca, beat.agent_version)

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
        agent = HostAgentRecord.of(node)
        if node.provision_state != ACTIVE or not agent.accepts(node, beat.agent_token):
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
        host = parsed.hostname or ""
        self._check_binding(node, agent, beat, host)
        return host

    @staticmethod
    def _check_binding(node, agent: HostAgentRecord, beat: Heartbeat, host: str) -> None:
        """A bound token is accepted only from its host with its certificate."""
        if not agent.accepts(node, beat.agent_token):
            raise errors.InvalidParameter(TOKEN_ERROR)   # revoked since the first check
        if not agent.bound:
            return
        if agent.bound_host != host:
            LOG.error("Node %s: host heartbeat from %s, the token is bound to %s",
                      node.uuid, host, agent.bound_host)
            raise errors.InvalidParameter(HOST_CHANGED)
        if (agent.verify_ca or None) != (beat.agent_verify_ca or None):
            LOG.error("Node %s: host heartbeat with another certificate than the one its "
                      "token is bound to", node.uuid)
            raise errors.InvalidParameter(CERT_CHANGED)


def _since(node) -> str:
    return str(node.provision_updated_at)
