"""Redfish power interface ("redfish"): ComputerSystem.Reset, then wait for the state.

A Redfish reset returns as soon as the BMC accepts it; the machine gets there
later (sushy-tools' fake driver: 1-11 s; real servers: seconds to minutes for a
graceful shutdown). Like Ironic, we poll the system until it reports the target
state or the power state change timeout runs out.
"""
from __future__ import annotations

import logging
import time

import sushy

from conductor import errors
from conductor.drivers import base
from conductor.drivers.base import PowerState
from conductor.drivers.redfish.client import RedfishClient, RedfishInterface

LOG = logging.getLogger(__name__)

#: Requested state -> (Redfish ResetType, the state the system must reach). Ironic's map.
RESETS = {
    PowerState.ON: (sushy.ResetType.ON, PowerState.ON),
    PowerState.OFF: (sushy.ResetType.FORCE_OFF, PowerState.OFF),
    PowerState.SOFT_OFF: (sushy.ResetType.GRACEFUL_SHUTDOWN, PowerState.OFF),
    PowerState.REBOOT: (sushy.ResetType.FORCE_RESTART, PowerState.ON),
    PowerState.SOFT_REBOOT: (sushy.ResetType.GRACEFUL_RESTART, PowerState.ON),
}

#: Redfish PowerState -> ours. Transitional states count as where they are
#: heading (as in Ironic); waiting, however, requires the settled value.
POWER_STATES = {
    sushy.PowerState.ON: PowerState.ON,
    sushy.PowerState.POWERING_ON: PowerState.ON,
    sushy.PowerState.OFF: PowerState.OFF,
    sushy.PowerState.POWERING_OFF: PowerState.OFF,
}

#: Our settled state -> the Redfish value that proves it.
SETTLED = {PowerState.ON: sushy.PowerState.ON, PowerState.OFF: sushy.PowerState.OFF}


class RedfishPower(RedfishInterface, base.PowerInterface):
    """Power on/off/soft off/reboot/soft reboot through ComputerSystem.Reset."""

    def get_power_state(self, task) -> PowerState:
        raw = self.client(task).run("power state read", lambda system: system.power_state)
        return POWER_STATES.get(raw, PowerState.ERROR)

    def set_power_state(self, task, state: PowerState, timeout: int | None = None) -> None:
        state = PowerState(state)
        if state in (PowerState.REBOOT, PowerState.SOFT_REBOOT):
            return self._reboot(task, state, timeout)
        if state not in RESETS:
            raise errors.InvalidParameter(f"Cannot set power state {state.value!r}.")
        client = self.client(task)
        reset, target = RESETS[state]
        current = client.run("power state read", lambda system: system.power_state)
        if current == SETTLED[target]:
            LOG.info("Node %s: already %s, no Redfish reset sent", task.node.uuid,
                     target.value)
            return
        self._reset(client, task, reset)
        self._wait(client, task, target, timeout)

    def reboot(self, task, timeout: int | None = None) -> None:
        self._reboot(task, PowerState.REBOOT, timeout)

    def _reboot(self, task, state: PowerState, timeout) -> None:
        client = self.client(task)
        current = client.run("power state read", lambda system: system.power_state)
        # Ironic: a machine that is off is rebooted by powering it on.
        reset = RESETS[state][0] if current != sushy.PowerState.OFF else sushy.ResetType.ON
        self._reset(client, task, reset)
        self._wait(client, task, PowerState.ON, timeout)

    def _reset(self, client: RedfishClient, task, reset: sushy.ResetType) -> None:
        def post(system):
            allowed = system.get_allowed_reset_system_values()
            if reset not in allowed:
                raise errors.InvalidParameter(
                    f"The Redfish system of node {task.node.uuid} does not support "
                    f"ResetType {reset.value}; it allows: "
                    f"{', '.join(sorted(v.value for v in allowed))}.")
            system.reset_system(reset)
        LOG.info("Node %s: Redfish reset %s", task.node.uuid, reset.value)
        client.run(f"reset {reset.value}", post)

    def _wait(self, client: RedfishClient, task, target: PowerState, timeout) -> None:
        """Poll until the system reports ``target``; DriverError after the timeout."""
        settings = client.settings
        limit = float(timeout or settings.redfish.power_state_change_timeout)
        deadline = time.monotonic() + limit
        started = time.monotonic()
        while True:
            raw = client.run("power state read", lambda system: system.power_state)
            if raw == SETTLED[target]:
                LOG.info("Node %s: reached %s after %.1f s", task.node.uuid,
                         target.value, time.monotonic() - started)
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            time.sleep(min(settings.redfish.power_poll_interval, remaining))
        shown = getattr(raw, "value", raw)
        raise errors.DriverError(
            f"Timed out after {limit:g} s waiting for node {task.node.uuid} to reach "
            f"{target.value}: its Redfish system still reports {shown!r}. Retry, or raise "
            "[redfish] power_state_change_timeout (or the request's timeout) for a slow "
            "BMC.")
