"""What a host's Omaha events do to its instance row (Nebraska's events.go, spec §2.4).

13/1 downloading, 14/1 downloaded, 3/1 and 800/1 installed, 3/2 complete (the host
now runs the version it reports), any result 0 an error with its code and text; a
rollback (3/0, error 44) is an error whose text says so. In a safe-mode group any
error halts the group (``halt``). Events never grant or release anything: the Omaha
endpoint is public.
"""
from __future__ import annotations

import logging
from collections.abc import Callable

from conductor.db.update_events import EventRows, StatusChange
from conductor.db.updates import IN_PROGRESS, Instance
from ramdisk_agent.wire import omaha, omaha_codes

LOG = logging.getLogger(__name__)

#: (event type, result) -> the instance's new status.
EVENT_STATUS: dict[tuple[int, int], str] = {
    (omaha_codes.DOWNLOAD_STARTED, omaha_codes.RESULT_SUCCESS): "downloading",
    (omaha_codes.DOWNLOAD_FINISHED, omaha_codes.RESULT_SUCCESS): "downloaded",
    (omaha_codes.UPDATE_COMPLETE, omaha_codes.RESULT_SUCCESS): "installed",
    (omaha_codes.INSTALLED, omaha_codes.RESULT_SUCCESS): "installed",
    (omaha_codes.UPDATE_COMPLETE, omaha_codes.RESULT_SUCCESS_REBOOT): "complete",
}
#: previousversion values Flatcar sends on a first boot (nothing was updated).
NO_PREVIOUS = ("", "0.0.0.0")


def error_text(event: omaha.Event) -> str:
    error = event.error
    if error is None:
        return f"event {event.type} failed (no error code)"
    text = f"event {event.type} failed: {error}"
    return ("rollback: the new version did not stay, the host is back on its previous "
            "slot; " + text) if event.is_rollback else text


class Recorder:
    """Applies one app's events to its instance: written with the reports that arrive
    meanwhile, in one transaction (conductor/db/update_events.py), and committed
    before :meth:`record` returns - so before the report is answered."""

    def __init__(self, events: EventRows, halt: Callable[[Instance, str], None]):
        self.events, self.halt = events, halt

    def record(self, instance: Instance, app: omaha.AppRequest, safe_mode: bool) -> None:
        changes, errors = _changes(instance, app)
        self.events.record(changes)
        for change in changes:
            if change.status != "error":
                LOG.info("Update instance %s (node %s): %s %s", instance.machineid,
                         instance.node_uuid or "-", change.status,
                         change.running or change.version)
        for text in errors:
            LOG.warning("Update instance %s (node %s) on %s: %s", instance.machineid,
                        instance.node_uuid or "-", app.version, text)
            # Only an instance that was updating can halt its group: a report for a
            # machine id that was never granted anything (anyone can send one) is
            # recorded only.
            if safe_mode and instance.status in IN_PROGRESS:
                self.halt(instance, f"instance {instance.machineid} reported an error "
                                    f"in safe mode: {text}")


def _changes(instance: Instance, app: omaha.AppRequest
             ) -> tuple[list[StatusChange], list[str]]:
    """What ``app``'s events do to ``instance``, in their order, and the text of each
    error among them."""
    changes: list[StatusChange] = []
    errors: list[str] = []
    for event in app.events:
        if event.result == omaha_codes.RESULT_ERROR:
            text = error_text(event)
            changes.append(StatusChange(instance.id, "error", instance.target_version,
                                        code=event.error_code, text=text,
                                        running=app.version))
            errors.append(text)
            continue
        status = EVENT_STATUS.get((event.type, event.result))
        if status is None:
            continue       # deferred (9) or a type we do not track
        if status == "complete" and (event.previous_version or "") in NO_PREVIOUS:
            continue       # Flatcar's first boot: nothing was updated
        running = app.version if status == "complete" else None
        changes.append(StatusChange(instance.id, status, app.version if running else
                                    instance.target_version, running=running))
    return changes, errors
