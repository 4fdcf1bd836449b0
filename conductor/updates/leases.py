"""Reboot leases: locksmith's semaphore, held by the appliance (spec §4.1, pain point 1).

A host agent acquires a lease of its lease group before it reboots into a new image,
renews it while it comes back, and releases it once healthy on the new version. The
request is authenticated with the host agent's token (the one its heartbeats carry,
checked against the node's stored hash); a lease not renewed within ``ttl`` seconds is
gone, so a host that never comes back blocks nobody for longer than that. The counting
is conditional UPDATEs in the database (conductor/db/leases.py): any number of API
processes share one semaphore.
"""
from __future__ import annotations

import dataclasses
import datetime
import logging
from collections.abc import Callable
from typing import Any

from conductor import errors
from conductor.db.leases import LeaseRows, Outcome
from conductor.updates.catalogue import check_name

LOG = logging.getLogger(__name__)
ACTIONS = ("acquire", "renew", "release")
DEFAULT_GROUP = "default"
MAX_HOLDERS = 100000
BAD_TOKEN = "Invalid node or agent token."


@dataclasses.dataclass(frozen=True)
class LeaseRequest:
    node: str
    agent_token: str
    action: str
    group: str = DEFAULT_GROUP

    @classmethod
    def from_body(cls, body: Any) -> LeaseRequest:
        if not isinstance(body, dict):
            raise errors.InvalidParameter("A lease request is a JSON object with node, "
                                          "agent_token, action and optionally group.")
        unknown = set(body) - {"node", "agent_token", "action", "group"}
        if unknown:
            raise errors.InvalidParameter(f"Unknown lease request fields: {sorted(unknown)}")
        values: dict[str, str] = {}
        for name in ("node", "agent_token", "action"):
            value = body.get(name)
            if not isinstance(value, str) or not value or len(value) > 256:
                raise errors.InvalidParameter(f"The lease request needs {name} (a string).")
            values[name] = value
        if values["action"] not in ACTIONS:
            raise errors.InvalidParameter(f"Lease action {values['action'][:40]!r}: use one "
                                          f"of {', '.join(ACTIONS)}.")
        group = check_name(body.get("group", DEFAULT_GROUP), "lease group")
        return cls(values["node"], values["agent_token"], values["action"], group)


def document(outcome: Outcome, ttl: float) -> dict[str, Any]:
    """The contract's answer body for one outcome."""
    body: dict[str, Any] = {"held": outcome.held, "group": outcome.group,
                            "max": outcome.max, "holders": outcome.holders}
    if outcome.lease is not None:
        expires = outcome.lease.expires_at
        if expires.tzinfo is None:
            expires = expires.replace(tzinfo=datetime.UTC)
        body.update(holder=outcome.lease.holder, ttl=ttl,
                    expires_at=expires.astimezone(datetime.UTC).isoformat())
    if outcome.retry_after is not None:
        body["retry_after"] = round(outcome.retry_after, 1)
    return body


class RebootLeases:
    """``authenticate(node, token)`` -> the node's UUID when ``token`` is its host
    agent's, else NotAuthorized; ``node_uuid(host)``: a node name or UUID -> its UUID."""

    def __init__(self, rows: LeaseRows, authenticate: Callable[[str, str], str],
                 node_uuid: Callable[[str], str], ttl: float):
        self.rows, self.ttl = rows, ttl
        self.authenticate, self.node_uuid = authenticate, node_uuid

    def request(self, body: Any) -> tuple[int, dict[str, Any]]:
        """(HTTP status, body) of one POST; InvalidParameter (400) or NotAuthorized."""
        req = LeaseRequest.from_body(body)
        node_uuid = self.authenticate(req.node, req.agent_token)
        if req.action == "release":
            outcome = self.rows.release(req.group, node_uuid)
            LOG.info("Node %s released its reboot lease in group %s", node_uuid, req.group)
            return 200, document(outcome, self.ttl)
        outcome = self.rows.acquire(req.group, node_uuid, self.ttl,
                                    renew_only=req.action == "renew")
        if not outcome.held:
            return 409, document(outcome, self.ttl)
        LOG.info("Node %s holds a reboot lease in group %s (%d of %d)", node_uuid,
                 req.group, outcome.holders, outcome.max)
        return 200, document(outcome, self.ttl)

    # -- operator side ----------------------------------------------------------------
    def status(self) -> list[dict[str, Any]]:
        return [{"group": name, "max": maximum, "holders": [
            {"holder": lease.holder, "acquired_at": lease.acquired_at,
             "expires_at": lease.expires_at} for lease in held]}
            for name, maximum, held in self.rows.status()]

    def release(self, group: str, host: str) -> dict[str, Any]:
        """An operator's release of ``host``'s lease (a node name or UUID)."""
        node = self.node_uuid(host)
        outcome = self.rows.release(check_name(group, "lease group"), node)
        LOG.info("Node %s: reboot lease in group %s released by the operator", node, group)
        return document(outcome, self.ttl)

    def set_max(self, group: str, maximum: Any) -> dict[str, Any]:
        if not isinstance(maximum, int) or isinstance(maximum, bool) or \
                not 0 <= maximum <= MAX_HOLDERS:
            raise errors.InvalidParameter(f"max must be an integer 0-{MAX_HOLDERS}.")
        self.rows.set_max(check_name(group, "lease group"), maximum)
        return {"group": group, "max": maximum}
