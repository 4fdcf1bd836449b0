"""Reboot leases: locksmith's semaphore, held by the appliance (spec §4.1, pain point 1).

A host agent acquires a lease of its lease group before it reboots into a new image,
renews it while it comes back, and releases it once healthy on the new version. The
request is authenticated with the host agent's token (the one its heartbeats carry,
checked against the node's stored hash); a lease not renewed within ``ttl`` seconds is
gone, so a host that never comes back blocks nobody for longer than that. The counting
is conditional UPDATEs in the database (conductor/db/leases.py): any number of API
processes share one semaphore.

An acquire may ask to ``wait`` (seconds, at most :data:`MAX_WAIT`): a refused one is
then held in the process's waiting room (lease_wait.py) and answered as soon as a
release frees a slot - in the order the waiters came - or when the wait is over
(409, as a poll's). While hosts wait there, a new lease goes to them, not to an
acquire that arrives meanwhile (it waits, or is refused: a held request or its
current lease is never refused for it). A client that sends no ``wait`` polls as
before.
"""
from __future__ import annotations

import dataclasses
import datetime
import logging
import time
from collections.abc import Callable
from typing import Any

from conductor import errors
from conductor.db.leases import LeaseRows, Outcome
from conductor.updates.catalogue import check_name
from conductor.updates.lease_wait import GONE_POLL, HEAD_POLL, WaitingRoom

LOG = logging.getLogger(__name__)
ACTIONS = ("acquire", "renew", "release")
DEFAULT_GROUP = "default"
MAX_HOLDERS = 100000
BAD_TOKEN = "Invalid node or agent token."
#: The longest an acquire may be held (s): below the agents' HTTP timeout + wait.
MAX_WAIT = 60.0
#: Held acquires at most, all groups together (each holds a server thread).
MAX_WAITING = 64


@dataclasses.dataclass(frozen=True)
class LeaseRequest:
    node: str
    agent_token: str
    action: str
    group: str = DEFAULT_GROUP
    wait: float = 0.0     #: acquire: seconds the server may hold the request

    @classmethod
    def from_body(cls, body: Any) -> LeaseRequest:
        if not isinstance(body, dict):
            raise errors.InvalidParameter("A lease request is a JSON object with node, "
                                          "agent_token, action and optionally group.")
        unknown = set(body) - {"node", "agent_token", "action", "group", "wait"}
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
        wait = body.get("wait", 0)
        if not isinstance(wait, int | float) or isinstance(wait, bool) or \
                not 0 <= wait <= MAX_WAIT:
            raise errors.InvalidParameter(f"wait is the seconds an acquire may be held, "
                                          f"0-{MAX_WAIT:g}.")
        return cls(values["node"], values["agent_token"], values["action"], group,
                   float(wait))


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
                 node_uuid: Callable[[str], str], ttl: float,
                 room: WaitingRoom | None = None):
        self.rows, self.ttl = rows, ttl
        self.authenticate, self.node_uuid = authenticate, node_uuid
        self.room = room if room is not None else WaitingRoom(MAX_WAITING)

    def request(self, body: Any, gone: Callable[[], bool] = lambda: False
                ) -> tuple[int, dict[str, Any]]:
        """(HTTP status, body) of one POST; InvalidParameter (400) or NotAuthorized.
        ``gone()``: whether the client has left (a held acquire then stops)."""
        req = LeaseRequest.from_body(body)
        node_uuid = self.authenticate(req.node, req.agent_token)
        if req.action == "release":
            outcome = self._release(req.group, node_uuid)
            LOG.info("Node %s released its reboot lease in group %s", node_uuid, req.group)
            return 200, document(outcome, self.ttl)
        # held waiters came first: a new lease goes to them (in the order they came)
        outcome = self.rows.acquire(req.group, node_uuid, self.ttl,
                                    renew_only=req.action == "renew",
                                    defer=self.room.others_wait(req.group, node_uuid))
        if not outcome.held and req.action == "acquire" and req.wait > 0:
            outcome = self._held(req, node_uuid, outcome, gone)
        if not outcome.held:
            return 409, document(outcome, self.ttl)
        LOG.info("Node %s holds a reboot lease in group %s (%d of %d)", node_uuid,
                 req.group, outcome.holders, outcome.max)
        return 200, document(outcome, self.ttl)

    def _release(self, group: str, node: str) -> Outcome:
        """Release ``node``'s lease, handing the slot to the oldest waiter held here."""
        successor = self.room.call_next(group)
        if successor is None:
            return self.rows.release(group, node)
        try:
            outcome, successor.granted = self.rows.hand_over(group, node, successor.node,
                                                             self.ttl)
        finally:
            successor.wake.set()          # granted: it answers; else it tries itself
        return outcome

    def _held(self, req: LeaseRequest, node: str, refused: Outcome,
              gone: Callable[[], bool]) -> Outcome:
        """Wait in the room for a slot, up to ``req.wait`` s; the last outcome."""
        waiter = self.room.enter(req.group, node, gone)
        if waiter is None:       # the room is full, or this node waits already
            return refused
        deadline, outcome = time.monotonic() + req.wait, refused
        try:
            while (remaining := deadline - time.monotonic()) > 0 and not gone():
                first = self.room.is_first(waiter)
                woken = waiter.wake.wait(min(remaining, HEAD_POLL if first else GONE_POLL))
                if waiter.granted is not None:            # a release handed it over
                    return waiter.granted
                if (woken or first) and not gone():
                    outcome = self.rows.acquire(req.group, node, self.ttl)
                    if outcome.held:
                        return outcome
                self.room.tried(waiter)
            return outcome
        finally:
            self.room.leave(waiter)

    # -- operator side ----------------------------------------------------------------
    def status(self) -> list[dict[str, Any]]:
        return [{"group": name, "max": maximum, "holders": [
            {"holder": lease.holder, "acquired_at": lease.acquired_at,
             "expires_at": lease.expires_at} for lease in held]}
            for name, maximum, held in self.rows.status()]

    def release(self, group: str, host: str) -> dict[str, Any]:
        """An operator's release of ``host``'s lease (a node name or UUID)."""
        node = self.node_uuid(host)
        outcome = self._release(check_name(group, "lease group"), node)
        LOG.info("Node %s: reboot lease in group %s released by the operator", node, group)
        return document(outcome, self.ttl)

    def set_max(self, group: str, maximum: Any) -> dict[str, Any]:
        if not isinstance(maximum, int) or isinstance(maximum, bool) or \
                not 0 <= maximum <= MAX_HOLDERS:
            raise errors.InvalidParameter(f"max must be an integer 0-{MAX_HOLDERS}.")
        self.rows.set_max(check_name(group, "lease group"), maximum)
        self.room.wake(group, every=True)
        return {"group": group, "max": maximum}
