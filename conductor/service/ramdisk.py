"""The ramdisk endpoints' facade: lookup (one-time agent token) and heartbeat.

Lookup answers only in the states where an agent is expected and mints the token
once, under the node lock; a repeat lookup sees "******". A heartbeat is checked
(token, callback URL, certificate) before anything is stored, recorded under the
node lock, and the step work it triggers runs on a worker, so the API answers 202
at once. Everything here returns quickly; NodeLocked (409) makes the agent retry.
"""
from __future__ import annotations

import dataclasses
import hmac
import logging
import secrets as pysecrets
from urllib.parse import ParseResult, urlparse

from cryptography import x509

from conductor import errors, states
from conductor.service import validation
from conductor.db.queries import utcnow
from conductor.secrets import MASK
from conductor.engine.task import Task

LOG = logging.getLogger(__name__)
S = states.State

#: Where an agent may look itself up (Ironic's LOOKUP_ALLOWED_STATES).
LOOKUP_STATES = frozenset(s.value for s in (
    S.DEPLOYING, S.DEPLOYWAIT, S.CLEANING, S.CLEAN_WAIT, S.INSPECTING, S.INSPECT_WAIT,
    S.RESCUING, S.RESCUEWAIT, S.SERVICE_WAIT))
#: Wait states whose heartbeats hand work to the deploy interface.
DRIVEN_STATES = frozenset({S.DEPLOYWAIT.value, S.CLEAN_WAIT.value})
AGENT_STATUSES = ("start", "end", "error")
TOKEN_ERROR = "Invalid or missing agent token received."


@dataclasses.dataclass(frozen=True)
class Heartbeat:
    """One heartbeat body, as the API parsed it."""

    callback_url: str
    agent_token: str | None = None
    agent_version: str | None = None
    agent_verify_ca: str | None = None
    agent_status: str | None = None
    agent_status_message: str | None = None


class AgentService:
    """Lookup and heartbeat over the store, settings and worker pool of one process."""

    def __init__(self, store, settings, workers):
        self.store = store
        self.settings = settings
        self.workers = workers
        self.host = settings.conductor_host
        #: Host-mode agents (conductor.patching.host_channel.HostAgents), wired by the appliance.
        self.host_agents = None

    # -- lookup -------------------------------------------------------------
    def lookup(self, addresses: list[str], node_uuid: str | None, mode: str | None = None):
        """(node, token shown) for the agent of a node; NotFound hides the reason.

        ``mode="host"`` is an installed host's agent (conductor/patching/host_channel.py).
        """
        macs = []
        for address in addresses:
            try:
                macs.append(validation.mac_address(address))
            except errors.Invalid:
                LOG.warning("Lookup: ignoring invalid MAC address %r", address)
        if not macs and not node_uuid:
            raise errors.InvalidParameter('One of "addresses" and "node_uuid" is required '
                                          "for a lookup (no valid MAC address given).")
        node = self._find(macs, node_uuid)
        if mode == "host":
            if self.host_agents is None:
                raise errors.NotFound()
            return self.host_agents.lookup(node)
        if node.provision_state not in LOOKUP_STATES:
            LOG.error("Lookup refused for node %s in provision state %s", node.uuid,
                      node.provision_state)
            raise errors.NotFound()
        if (node.driver_internal_info or {}).get("agent_secret_token"):
            LOG.warning("Node %s: repeat lookup, the agent token is not sent again",
                        node.uuid)
            return node, MASK
        return self._mint_token(node)

    def _find(self, macs: list[str], node_uuid: str | None):
        try:
            if node_uuid:
                return self.store.get_node(node_uuid)
            owners = {}
            for mac in macs:
                for port in self.store.list_ports({"address": mac}):
                    owners[port.node_uuid] = port
        except errors.NotFound:
            raise errors.NotFound() from None
        if len(owners) != 1:
            LOG.error("Lookup by %s matched %d nodes", ", ".join(macs), len(owners))
            raise errors.NotFound()
        return self.store.get_node(next(iter(owners)))

    def _mint_token(self, node):
        """Generate and store the token under the node lock (409 while it is busy)."""
        self.store.reserve(node, self.host, expect={"provision_state": node.provision_state})
        token, values = None, {}
        try:
            info = dict(self.store.get_node_by_id(node.id).driver_internal_info or {})
            if not info.get("agent_secret_token"):
                token = pysecrets.token_urlsafe(32)
                info["agent_secret_token"] = token
                values = {"driver_internal_info": info}
        finally:
            self.store.release(node.id, self.host, values)
        if token:
            LOG.info("Node %s: agent token issued at lookup", node.uuid)
        return self.store.get_node_by_id(node.id), token or MASK

    def lookup_config(self, node, token: str) -> dict:
        """The ``config`` half of the lookup answer."""
        return {
            "metrics": {"backend": "noop", "prepend_host": False, "prepend_uuid": False,
                        "prepend_host_reverse": True, "global_prefix": None},
            "metrics_statsd": {"statsd_host": "localhost", "statsd_port": 8125},
            "heartbeat_timeout": self.settings.agent_heartbeat_timeout,
            "agent_containers": {"allow_arbitrary_containers": False,
                                 "allowed_containers": []},
            "agent_token": token,
            "agent_token_required": True,
            "agent_md5_checksum_enable": False,
            "disable_deep_image_inspection": False,
            "permitted_image_formats": ["raw", "qcow2"],
            "agent_skip_bmc_detect": node.management_interface == "redfish",
            "enable_bios_bootloader_install": False,
            "tls_min_version": "1.2",
            "tls_cipher_suites": None,
        }

    # -- heartbeat ----------------------------------------------------------
    def heartbeat(self, ident: str, beat: Heartbeat) -> None:
        """Validate and record a heartbeat; continue deploy/clean on a worker."""
        node = self.store.get_node(ident)
        self._check(node, beat)
        driven = node.provision_state in DRIVEN_STATES and not node.maintenance
        if driven:
            self.workers.claim_slot()
        try:
            self.store.reserve(node, self.host,
                               expect={"provision_state": node.provision_state})
        except BaseException:
            if driven:
                self.workers.release_slot()
            raise
        task = Task(self.store, self.store.get_node_by_id(node.id), self.host,
                    self.workers.context)
        try:
            self._check(task.node, beat)
            self._record(task, beat)
        except BaseException:
            task.release()
            if driven:
                self.workers.release_slot()
            raise
        if not driven or not hasattr(task.deploy, "heartbeat"):
            task.release()
            if driven:
                self.workers.release_slot()
            return
        self.workers.spawn(task, process_heartbeat)

    def _check(self, node, beat: Heartbeat) -> None:
        """Every reason to refuse a heartbeat, before anything is stored."""
        info = node.driver_internal_info or {}
        stored = info.get("agent_secret_token")
        if not stored or not isinstance(beat.agent_token, str) or not hmac.compare_digest(
                stored.encode(), beat.agent_token.encode()):
            LOG.error("Node %s: heartbeat with an invalid or missing agent token", node.uuid)
            raise errors.InvalidParameter(TOKEN_ERROR)
        if not beat.agent_version:
            raise errors.InvalidParameter('Field "agent_version" is required in a heartbeat.')
        if beat.agent_status is not None and beat.agent_status not in AGENT_STATUSES:
            raise errors.InvalidParameter("Agent status is invalid. Valid states are "
                                          f"{','.join(AGENT_STATUSES)}.")
        self._check_url(node, info, beat.callback_url)
        if beat.agent_verify_ca is not None:
            _check_certificate(node, info, beat.agent_verify_ca)

    def _check_url(self, node, info: dict, url: str) -> None:
        check_callback_url(url, self.settings.agent_require_tls)
        if info.get("agent_url") not in (None, url):
            LOG.error("Node %s: heartbeat with callback URL %s, expected %s", node.uuid,
                      url, info["agent_url"])
            raise errors.InvalidParameter('Detected change in ramdisk provided "callback_url"')

    def _record(self, task: Task, beat: Heartbeat) -> None:
        info = dict(task.node.driver_internal_info or {}, agent_url=beat.callback_url,
                    agent_version=beat.agent_version,
                    agent_last_heartbeat=utcnow().isoformat())
        if beat.agent_verify_ca:
            info["agent_verify_ca"] = beat.agent_verify_ca
        values = {"driver_internal_info": info}
        if task.node.provision_state in {s.value for s in states.WAIT_STATES}:
            values["provision_updated_at"] = utcnow()  # a live agent is not a timeout
        task.update(**values)
        LOG.debug("Node %s: heartbeat from %s (agent %s)", task.node.uuid,
                  beat.callback_url, beat.agent_version)


def check_callback_url(url: str, require_tls: bool) -> ParseResult:
    """The parsed ``callback_url`` of a heartbeat (ramdisk or host agent), or InvalidParameter
    when it is not an http(s) URL with a host, or plain http while TLS is required."""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise errors.InvalidParameter('An issue with the supplied "callback_url" has '
                                      "been detected.")
    if parsed.scheme != "https" and require_tls:
        raise errors.InvalidParameter(
            f"The agent callback URL {url} is not HTTPS and [agent] require_tls is "
            "enabled; start the agent with TLS (or set require_tls = false).")
    return parsed


def check_pem_certificate(pem: str) -> None:
    """InvalidParameter unless a heartbeat's ``agent_verify_ca`` is a PEM certificate."""
    try:
        x509.load_pem_x509_certificate(pem.encode())
    except (ValueError, TypeError):
        raise errors.InvalidParameter('"agent_verify_ca" is not a PEM certificate.') from None


def _check_certificate(node, info: dict, pem: str) -> None:
    check_pem_certificate(pem)
    if info.get("agent_verify_ca") not in (None, pem):
        LOG.error("Node %s: heartbeat with a different agent certificate", node.uuid)
        raise errors.InvalidParameter('Detected change in ramdisk provided "agent_verify_ca"')


def process_heartbeat(task: Task) -> None:
    """Worker action: let the deploy interface continue its steps."""
    task.deploy.heartbeat(task)
