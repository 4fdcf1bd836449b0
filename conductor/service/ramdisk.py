"""The ramdisk endpoints' facade: lookup (one-time agent token) and heartbeat, and
the node vendor passthru that issues host-agent tokens.

Lookup answers only in the states where an agent is expected and mints the token
once; a repeat lookup sees "******". The token is stored
hashed, with an encrypted copy for the command API (conductor/drivers/internal_info.py).
A lookup that names an ``agent_mode`` (the host-mode lookup of older versions) gets
the answer of an unknown node: a host agent's token comes from the authenticated
vendor passthru ``issue_host_agent_token`` instead (conductor/patching/host_channel.py).
A heartbeat is checked (token, callback URL, certificate) before anything is stored,
recorded (with the node lock taken for the worker that goes on) in one conditional
UPDATE of the node as checked, or under the lock when the node changed meanwhile, and
the step work it triggers runs on a worker, so the API answers 202 at once. A lookup
mints its token the same way. Everything here returns quickly; NodeLocked (409)
makes the agent retry.
"""
from __future__ import annotations

import dataclasses
import logging
import secrets as pysecrets
from typing import TYPE_CHECKING

from conductor import errors, states
from conductor.db.queries import utcnow
from conductor.drivers import internal_info
from conductor.drivers.deploy.heartbeat import (
    AGENT_STATUSES,
    TOKEN_ERROR,
    Heartbeat,
    check_callback_url,
    check_pem_certificate,
)
from conductor.drivers.internal_info import AgentBoot
from conductor.engine import actions, intents
from conductor.engine.task import Task
from conductor.secrets import MASK
from conductor.service import validation

if TYPE_CHECKING:
    from conductor.config import Settings
    from conductor.db.queries import Store
    from conductor.engine.workers import Workers
    from conductor.metrics.events import EngineMetrics
    from conductor.patching.host_channel import HostAgents
    from conductor.secrets import Cipher

LOG = logging.getLogger(__name__)
S = states.State

#: Where an agent may look itself up (Ironic's LOOKUP_ALLOWED_STATES).
LOOKUP_STATES = frozenset(s.value for s in (
    S.DEPLOYING, S.DEPLOYWAIT, S.CLEANING, S.CLEAN_WAIT, S.INSPECTING, S.INSPECT_WAIT,
    S.RESCUING, S.RESCUEWAIT, S.SERVICE_WAIT))
#: Where a heartbeat also resets the wait's timeout.
WAIT_STATES = frozenset(s.value for s in states.WAIT_STATES)
#: Wait states whose heartbeats hand work to the deploy interface.
DRIVEN_STATES = frozenset({S.DEPLOYWAIT.value, S.CLEAN_WAIT.value})
#: Node vendor passthru methods (Ironic's extension point, ``POST
#: /v1/nodes/<node>/vendor_passthru?method=...``) -> (HTTP methods, description).
PASSTHRU_METHODS = {
    "issue_host_agent_token": (("POST",), (
        "Issue the token of the node's host agent (metalcast-agent host) and revoke "
        "the previous one; active nodes only. Returns {token, node_uuid}; the first "
        "heartbeat with it binds it to the agent's host and TLS certificate.")),
}


class AgentService:
    """Lookup and heartbeat over the store, settings and worker pool of one process."""

    def __init__(self, store: Store, settings: Settings, workers: Workers,
                 host_agents: HostAgents | None, cipher: Cipher | None = None,
                 metrics: EngineMetrics | None = None):
        self.store = store
        self.settings = settings
        self.workers = workers
        self.host = settings.conductor.host
        #: Host-mode agents (conductor.patching.host_channel.HostAgents); None: refused.
        self.host_agents = host_agents
        #: Encrypts the copy of each lookup token the conductor sends on commands.
        self.cipher = cipher
        #: Counts heartbeats accepted and refused (conductor/metrics/events.py).
        self.metrics = metrics

    # -- lookup -------------------------------------------------------------
    def lookup(self, addresses: list[str], node_uuid: str | None, mode: str | None = None):
        """(node, token shown) for the agent of a node; NotFound hides the reason.

        Any ``mode`` (older host agents sent ``agent_mode=host``) is answered as an
        unknown node, after the same input checks and without reading a node: whether
        the node exists or is active must not show.
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
        if mode is not None:
            LOG.warning("Lookup with agent_mode %r refused (host agents get their token "
                        "from issue_host_agent_token)", mode[:20])
            raise errors.NotFound()
        node = self._find(macs, node_uuid)
        if node.provision_state not in LOOKUP_STATES:
            LOG.error("Lookup refused for node %s in provision state %s", node.uuid,
                      node.provision_state)
            raise errors.NotFound()
        if AgentBoot.of(node).issued:
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
        """Generate and store the token: in one conditional UPDATE of the node as read
        (free, unchanged), else under the node lock (409 while it is busy)."""
        token = pysecrets.token_urlsafe(32)
        minted = self._write_unchanged(node, {"driver_internal_info": internal_info.with_token(
            node.driver_internal_info, token, self.cipher)})
        if minted is not None:
            LOG.info("Node %s: agent token issued at lookup", node.uuid)
            return minted, token
        return self._mint_token_locked(node)

    def _mint_token_locked(self, node):
        self.store.reserve(node, self.host, expect={"provision_state": node.provision_state})
        token, values = None, {}
        try:
            current = self.store.get_node_by_id(node.id)
            if not AgentBoot.of(current).issued:
                token = pysecrets.token_urlsafe(32)
                values = {"driver_internal_info": internal_info.with_token(
                    current.driver_internal_info, token, self.cipher)}
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
            "heartbeat_timeout": self.settings.agent.heartbeat_timeout,
            "agent_containers": {"allow_arbitrary_containers": False,
                                 "allowed_containers": []},
            "agent_token": token,
            "agent_token_required": True,
            "agent_md5_checksum_enable": False,
            "disable_deep_image_inspection": False,
            # Ironic's [conductor]permitted_image_formats default: a stock IPA refuses
            # any image whose detected format is not listed ("gpt" is a raw GPT disk).
            "permitted_image_formats": ["raw", "gpt", "qcow2", "iso"],
            "agent_skip_bmc_detect": node.management_interface == "redfish",
            "enable_bios_bootloader_install": False,
            "tls_min_version": "1.2",
            "tls_cipher_suites": None,
        }

    def upgrade_stored_tokens(self) -> int:
        """Replace the plain-text agent tokens an older version stored (at start-up);
        how many nodes changed. A busy node is left for the next start."""
        count = 0
        for node in self.store.list_nodes(columns=("id", "uuid", "driver_internal_info")):
            info = internal_info.upgraded(node.driver_internal_info, self.cipher)
            if info is not None and self.store.update_node(
                    node.id, {"driver_internal_info": info}, expect={"reservation": None}):
                LOG.warning("Node %s: agent tokens stored in plain text by an older version "
                            "replaced (a host-agent token is revoked: issue a new one)",
                            node.uuid)
                count += 1
        return count

    # -- vendor passthru (authenticated API) ---------------------------------
    def passthru_methods(self, ident: str) -> dict:
        """``GET /v1/nodes/<node>/vendor_passthru/methods`` (Ironic's shape)."""
        self.store.get_node(ident)
        return {name: {"http_methods": list(verbs), "async": False, "description": text,
                       "attach": False, "require_exclusive_lock": True}
                for name, (verbs, text) in PASSTHRU_METHODS.items()}

    def vendor_passthru(self, ident: str, method: str | None, http_method: str,
                        args: dict | None) -> dict:
        """Run one vendor passthru method on a node; its JSON answer."""
        if not method:
            raise errors.InvalidParameter('A vendor passthru call needs "method", e.g. '
                                          "?method=issue_host_agent_token.")
        if method not in PASSTHRU_METHODS:
            raise errors.InvalidParameter(
                f"No handler for method {method[:60]!r}; node vendor passthru methods: "
                f"{', '.join(PASSTHRU_METHODS)}.")
        if http_method not in PASSTHRU_METHODS[method][0]:
            raise errors.InvalidParameter(
                f"Method {method} takes HTTP {', '.join(PASSTHRU_METHODS[method][0])}, "
                f"not {http_method}.")
        if args:
            raise errors.InvalidParameter(
                f"Method {method} takes no arguments, got: {', '.join(sorted(args))[:200]}.")
        if self.host_agents is None:
            raise errors.NotFound()
        node, token = self.host_agents.issue_token(ident)
        return {"token": token, "node_uuid": node.uuid}

    def _write_unchanged(self, node, values: dict):
        """``values`` written in one conditional UPDATE, if nobody holds the node and
        nothing wrote it since ``node`` was read (its ``updated_at``): the node as
        written, or None (the caller then takes the lock and reads it again). Taking
        the lock, reading and writing cost three statements more, per heartbeat."""
        written = dict(values, updated_at=utcnow())
        if not self.store.update_node(node.id, written, expect={
                "reservation": None, "provision_state": node.provision_state,
                "updated_at": node.updated_at}):
            return None
        return dataclasses.replace(node, **written)

    # -- heartbeat ----------------------------------------------------------
    def heartbeat(self, ident: str, beat: Heartbeat) -> None:
        """Validate and record a heartbeat; continue deploy/clean on a worker."""
        node = self.store.get_node(ident)
        try:
            self._check(node, beat)
        except errors.MetalcastError:
            self._count(accepted=False)
            raise
        self._count(accepted=True)
        if node.reservation:
            # Busy (an agent beats when its command ends, often while the worker that
            # sent it still holds the node): 409 at once, as the lock would answer.
            raise errors.NodeLocked(node=node.uuid, host=node.reservation)
        driven = node.provision_state in DRIVEN_STATES and not node.maintenance
        owner = self._owner(node) if driven else self.host
        if owner != self.host:
            return self._hand_over(node, beat, owner)
        if driven:
            self.workers.claim_slot()
        try:
            # The heartbeat recorded (and the lock taken when a worker goes on) in one
            # UPDATE of the node as checked; else (it changed meanwhile) lock, read and
            # check again.
            lock = {"reservation": self.host} if driven else {}
            written = self._write_unchanged(node, dict(self._recorded(node, beat), **lock))
            if written is not None and not driven:
                return
            task = Task(self.store, written or self._lock_and_record(node, beat), self.host,
                        self.workers.drivers)
        except BaseException:
            if driven:
                self.workers.release_slot()
            raise
        if not driven or not hasattr(task.deploy, "heartbeat"):
            task.release()
            if driven:
                self.workers.release_slot()
            return
        self.workers.spawn(task, actions.heartbeat)

    def _owner(self, node) -> str:
        """The conductor that continues the node's steps: the ring's (the workers'
        ``owner_of``), this one when the ring names none or the deploy interface takes
        no heartbeat (the heartbeat is only recorded)."""
        owner = self.workers.owner_of(node) if self.workers.owner_of else None
        if owner is None or not hasattr(
                Task(self.store, node, self.host, self.workers.drivers).deploy, "heartbeat"):
            return self.host
        return owner

    def _hand_over(self, node, beat: Heartbeat, owner: str) -> None:
        """The heartbeat recorded with the lock in the name of the node's conductor,
        whose poller continues the steps (conductor/engine/intents.py)."""
        values = self._recorded(node, beat)
        info = values["driver_internal_info"]
        assert isinstance(info, dict)
        values["driver_internal_info"] = {**info, intents.HEARTBEAT_KEY: True}
        values.update(reservation=owner, conductor_affinity=None, updated_at=utcnow())
        if not self.store.update_node(node.id, values, expect={
                "reservation": None, "provision_state": node.provision_state,
                "updated_at": node.updated_at}):
            raise errors.Conflict(f"Node {node.uuid} changed while the heartbeat was "
                                  "processed; please retry.")
        LOG.info("Node %s: heartbeat in %s handed to conductor %s", node.uuid,
                 node.provision_state, owner)

    def _count(self, accepted: bool) -> None:
        if self.metrics is not None:
            self.metrics.heartbeat(accepted)

    def _lock_and_record(self, node, beat: Heartbeat):
        """The node under this conductor's lock, read again, checked and the heartbeat
        recorded (NodeLocked, Conflict or InvalidParameter leave it unlocked)."""
        self.store.reserve(node, self.host, expect={"provision_state": node.provision_state})
        task = Task(self.store, self.store.get_node_by_id(node.id), self.host,
                    self.workers.drivers)
        try:
            self._check(task.node, beat)
            task.update(**self._recorded(task.node, beat))
        except BaseException:
            task.release()
            raise
        return task.node

    def _check(self, node, beat: Heartbeat) -> None:
        """Every reason to refuse a heartbeat, before anything is stored."""
        agent = AgentBoot.of(node)
        if not agent.accepts(beat.agent_token):
            LOG.error("Node %s: heartbeat with an invalid or missing agent token", node.uuid)
            raise errors.InvalidParameter(TOKEN_ERROR)
        if not beat.agent_version:
            raise errors.InvalidParameter('Field "agent_version" is required in a heartbeat.')
        if beat.agent_status is not None and beat.agent_status not in AGENT_STATUSES:
            raise errors.InvalidParameter("Agent status is invalid. Valid states are "
                                          f"{','.join(AGENT_STATUSES)}.")
        self._check_url(node, agent, beat.callback_url)
        if beat.agent_verify_ca is not None:
            _check_certificate(node, agent, beat.agent_verify_ca)

    def _check_url(self, node, agent: AgentBoot, url: str) -> None:
        check_callback_url(url, self.settings.agent.require_tls)
        if agent.url not in (None, url):
            LOG.error("Node %s: heartbeat with callback URL %s, expected %s", node.uuid,
                      url, agent.url)
            raise errors.InvalidParameter('Detected change in ramdisk provided "callback_url"')

    @staticmethod
    def _recorded(node, beat: Heartbeat) -> dict[str, object]:
        """What an accepted heartbeat writes to ``node``."""
        LOG.debug("Node %s: heartbeat from %s (agent %s)", node.uuid, beat.callback_url,
                  beat.agent_version)
        now = utcnow()
        info = internal_info.with_heartbeat(
            node.driver_internal_info, beat.callback_url, beat.agent_version,
            now.isoformat(), beat.agent_verify_ca)
        values: dict[str, object] = {"driver_internal_info": info}
        if node.provision_state in WAIT_STATES:
            values["provision_updated_at"] = now  # a live agent is not a timeout
        return values


def _check_certificate(node, agent: AgentBoot, pem: str) -> None:
    if agent.verify_ca == pem:
        return  # the certificate this boot's first heartbeat gave: parsed then
    if agent.verify_ca is not None:
        LOG.error("Node %s: heartbeat with a different agent certificate", node.uuid)
        raise errors.InvalidParameter('Detected change in ramdisk provided "agent_verify_ca"')
    check_pem_certificate(pem)

