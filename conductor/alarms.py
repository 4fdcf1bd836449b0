"""Active alarms, StarlingX FM style: raised once, cleared when the condition ends.

An alarm is keyed by (alarm_id, entity_instance_id); raising an active alarm again
only updates its reason, so the timestamp says since when the condition holds.
Subsystems (patching today) describe their conditions and call ``set_active``
with the alarms that should exist now; everything else of theirs is cleared.
"""
from __future__ import annotations

import dataclasses
import datetime
import logging
import threading
import uuid

LOG = logging.getLogger(__name__)

SEVERITIES = ("critical", "major", "minor", "warning")


@dataclasses.dataclass
class Alarm:
    alarm_id: str
    entity_instance_id: str
    severity: str
    reason_text: str
    uuid: str = dataclasses.field(default_factory=lambda: str(uuid.uuid4()))
    timestamp: str = dataclasses.field(default_factory=lambda: datetime.datetime.now(
        datetime.UTC).isoformat(timespec="microseconds"))

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


class AlarmTable:
    """The active alarms of one appliance."""

    def __init__(self):
        self._active: dict[tuple[str, str], Alarm] = {}
        self._lock = threading.Lock()

    def set_active(self, owner_ids: tuple[str, ...], wanted: list[Alarm]) -> None:
        """Make ``wanted`` the active alarms among ``owner_ids``: raise new, clear gone."""
        wanted_keys = {(a.alarm_id, a.entity_instance_id): a for a in wanted}
        with self._lock:
            for key in [k for k in self._active if k[0] in owner_ids]:
                if key not in wanted_keys:
                    LOG.info("Alarm %s cleared for %s", key[0], key[1])
                    del self._active[key]
            for key, alarm in wanted_keys.items():
                current = self._active.get(key)
                if current is None:
                    LOG.warning("Alarm %s raised (%s) for %s: %s", alarm.alarm_id,
                                alarm.severity, alarm.entity_instance_id, alarm.reason_text)
                    self._active[key] = alarm
                elif current.reason_text != alarm.reason_text:
                    current.reason_text = alarm.reason_text

    def list(self) -> list[Alarm]:
        with self._lock:
            return sorted(self._active.values(), key=lambda a: (a.alarm_id, a.timestamp))
