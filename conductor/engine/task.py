"""A Task: one node under this conductor's exclusive lock, with its interfaces."""
from __future__ import annotations

import logging

from conductor import states
from conductor.drivers import registry as hardware
from conductor.db.queries import Store, utcnow

LOG = logging.getLogger(__name__)


class Task:
    """Holds the lock on ``node``; every change goes to the database at once."""

    def __init__(self, store: Store, node, host: str, context=None):
        self.store = store
        self.node = node
        self.host = host
        self.context = context
        self._interfaces: dict[str, object] = {}
        self.released = False

    @property
    def driver_info(self) -> dict:
        """The node's driver_info with secrets decrypted: drivers read credentials here."""
        info = self.node.driver_info or {}
        cipher = getattr(self.context, "cipher", None)
        return cipher.decrypt_dict(info) if cipher else dict(info)

    def interface_name(self, kind: str) -> str:
        return getattr(self.node, f"{kind}_interface")

    def iface(self, kind: str):
        if kind not in self._interfaces:
            self._interfaces[kind] = hardware.build(kind, self.interface_name(kind),
                                                    self.context)
        return self._interfaces[kind]

    @property
    def power(self):
        return self.iface("power")

    @property
    def management(self):
        return self.iface("management")

    @property
    def boot(self):
        return self.iface("boot")

    @property
    def deploy(self):
        return self.iface("deploy")

    def update(self, **values) -> None:
        """Write ``values`` to the node row and to ``self.node``."""
        self.store.update_node(self.node.id, values)
        for key, value in values.items():
            setattr(self.node, key, value)

    def process_event(self, event: str, target: str | None = None, **values) -> None:
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

    def release(self, **values) -> None:
        """Drop the lock unless the final state change already did."""
        if self.released:
            return
        self.released = True
        if not self.store.release(self.node.id, self.host, values):
            LOG.warning("Node %s: lock of %s was already gone at release",
                        self.node.uuid, self.host)
        self.node.reservation = None
