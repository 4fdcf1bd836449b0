"""A Task: one node under this conductor's exclusive lock, with its interfaces."""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, cast

from conductor import states
from conductor.db.queries import Store, utcnow
from conductor.db.records import Node

if TYPE_CHECKING:
    from conductor.drivers.base import (
        BootInterface,
        DeployInterface,
        ManagementInterface,
        PowerInterface,
    )
    from conductor.drivers.context import DriverContext
    from conductor.drivers.registry import DriverRegistry

LOG = logging.getLogger(__name__)


class Task:
    """Holds the lock on ``node``; every change goes to the database at once, or at
    the end of a :meth:`merged_writes` block."""

    def __init__(self, store: Store, node: Node, host: str, drivers: DriverRegistry):
        self.store = store
        self.node = node
        self.host = host
        #: Builds the node's interfaces; they share ``drivers.context``.
        self.drivers = drivers
        self._interfaces: dict[str, Any] = {}
        #: (the node's driver_info dict, it decrypted): decrypted once per version.
        self._secrets: tuple[Any, dict[str, Any]] | None = None
        #: Values waiting for the end of a merged_writes() block; None: none open.
        self._pending: dict[str, Any] | None = None
        self.released = False

    @property
    def context(self) -> DriverContext:
        """The process's driver resources (settings, sessions, boot and DNS services)."""
        return self.drivers.context

    @property
    def driver_info(self) -> dict[str, Any]:
        """The node's driver_info with secrets decrypted: drivers read credentials here
        (a copy; its nested values are shared, to be read only).

        Decrypted once while ``node.driver_info`` stays the same object: a deploy reads
        the BMC credentials for every IPMI command, some twenty times.
        """
        info = self.node.driver_info or {}
        if self._secrets is None or self._secrets[0] is not info:
            cipher = self.context.cipher
            self._secrets = (info, cipher.decrypt_dict(info) if cipher else dict(info))
        return dict(self._secrets[1])

    def interface_name(self, kind: str) -> str:
        name: str = getattr(self.node, f"{kind}_interface")
        return name

    def iface(self, kind: str) -> Any:
        """The node's implementation of interface ``kind`` (built once per task)."""
        if kind not in self._interfaces:
            self._interfaces[kind] = self.drivers.build(kind, self.interface_name(kind))
        return self._interfaces[kind]

    @property
    def power(self) -> PowerInterface:
        return cast("PowerInterface", self.iface("power"))

    @property
    def management(self) -> ManagementInterface:
        return cast("ManagementInterface", self.iface("management"))

    @property
    def boot(self) -> BootInterface:
        return cast("BootInterface", self.iface("boot"))

    @property
    def deploy(self) -> DeployInterface:
        return cast("DeployInterface", self.iface("deploy"))

    def update(self, **values: Any) -> None:
        """Write ``values`` to the node row and to ``self.node`` (inside
        :meth:`merged_writes`: to ``self.node`` now, to the row when the block ends)."""
        if self._pending is not None:
            self._pending.update(values)
        else:
            self.store.update_node(self.node.id, values)
        for key, value in values.items():
            setattr(self.node, key, value)

    def update_now(self, **values: Any) -> None:
        """:meth:`update` written at once, with whatever a merged_writes() block holds
        so far: for what must be true in the row before the task goes on (an agent's
        token wiped)."""
        if self._pending:
            values = {**self._pending, **values}
            self._pending.clear()
        self.store.update_node(self.node.id, values)
        for key, value in values.items():
            setattr(self.node, key, value)

    @contextlib.contextmanager
    def merged_writes(self) -> Iterator[None]:
        """The updates inside go to the row in one UPDATE when the block ends (also when
        it raises, before the error goes on); ``self.node`` has them at once. For steps
        that record several facts in a row under the lock (boot device, power state,
        the state change): one statement instead of three. Nested blocks join the outer."""
        if self._pending is not None:
            yield
            return
        self._pending = {}
        try:
            yield
        finally:
            pending, self._pending = self._pending, None
            if pending:
                self.store.update_node(self.node.id, pending)

    def process_event(self, event: str, target: str | states.State | None = None,
                      **values: Any) -> None:
        """Advance the state machine by ``event`` and persist the new state."""
        new = states.transition(self.node.provision_state, event)
        if target is None:
            target = states.target_of(new)
        LOG.info("Node %s moved from %s to %s (%s)", self.node.uuid,
                 self.node.provision_state, new.value, event)
        if new not in states.WORKING_STATES:
            # The work ends here: drop the lock in the same UPDATE, so whoever sees
            # the new state can act on the node at once (no 409 window).
            values["reservation"] = None
            self.released = True
        self.update(provision_state=new.value,
                    target_provision_state=getattr(target, "value", target),
                    provision_updated_at=utcnow(), **values)

    def hand_over(self, owner: str, values: dict[str, Any]) -> bool:
        """Pass this lock to ``owner`` (the node's conductor) with ``values``: its
        poller runs the work left in the row (conductor/engine/intents.py). False: the
        lock was no longer ours, nothing written (it is then released as usual)."""
        if not self.store.update_node(self.node.id, dict(values, reservation=owner),
                                      expect={"reservation": self.host}):
            return False
        self.released = True
        self.node.reservation = owner
        return True

    def release(self, **values: Any) -> None:
        """Drop the lock unless the final state change already did."""
        if self.released:
            return
        self.released = True
        if self._pending:           # a merged_writes() block still open: its values too
            values = {**self._pending, **values}
            self._pending.clear()
        if not self.store.release(self.node.id, self.host, values):
            LOG.warning("Node %s: lock of %s was already gone at release",
                        self.node.uuid, self.host)
        self.node.reservation = None
