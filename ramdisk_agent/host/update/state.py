"""The engine's state, one JSON file in the state dir, written atomically.

A restart at any point (agent upgraded, killed, host rebooted) reads back what was
going on: the offer being installed and the checkpoint of its download, the version
that ran before the reboot (rollback detection, spec §1.2), whether this host holds
a reboot lease, which events are still to be sent. update_engine keeps the same in
its prefs; losing it made Flatcar send empty requests after a restart (Flatcar#388).
A file that cannot be read is moved aside (``state.json.bad``) and the engine starts
afresh: the GPT bits, not this file, decide what boots.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ramdisk_agent.errors import UpdateEngineError

LOG = logging.getLogger(__name__)

IDLE = "UPDATE_STATUS_IDLE"
CHECKING = "UPDATE_STATUS_CHECKING_FOR_UPDATE"
AVAILABLE = "UPDATE_STATUS_UPDATE_AVAILABLE"
DOWNLOADING = "UPDATE_STATUS_DOWNLOADING"
VERIFYING = "UPDATE_STATUS_VERIFYING"
FINALIZING = "UPDATE_STATUS_FINALIZING"
NEED_REBOOT = "UPDATE_STATUS_UPDATED_NEED_REBOOT"
REPORTING_ERROR = "UPDATE_STATUS_REPORTING_ERROR_EVENT"


@dataclasses.dataclass
class Offer:
    """The update being installed, as the Omaha answer described it."""

    version: str
    url: str
    size: int
    sha256: str               #: hex
    is_delta: bool
    signature: str | None     #: hex of the full image's Ed25519 signature
    slot: int                 #: the partition being written
    #: a delta's source: "active" (read from the running slot) or "passive" (the
    #: version the passive slot holds: applied in place, slotdelta.apply_in_place)
    base: str = "active"

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Offer:
        return cls(str(doc["version"]), str(doc["url"]), int(doc["size"]),
                   str(doc["sha256"]), bool(doc["is_delta"]),
                   None if doc.get("signature") is None else str(doc["signature"]),
                   int(doc["slot"]), str(doc.get("base") or "active"))


@dataclasses.dataclass
class EngineState:
    status: str = IDLE
    progress: float = 0.0
    new_version: str = ""
    new_size: int = 0
    offer: Offer | None = None
    checkpoint: int = 0               #: bytes of ``offer`` known written to the slot
    #: the version that ran when an update was installed: still running after the
    #: reboot means the new slot did not stay (rollback)
    previous_version: str = ""
    installed_version: str = ""      #: the version written and awaiting its boot
    installed_slot: int = 0
    install_boot_id: str = ""        #: the boot that installed it (same boot: no reboot yet)
    marked_good: str = ""            #: boot id whose slot was marked good
    lease_held: bool = False
    failures: int = 0                #: consecutive failed checks (backoff)
    delta_refused: str = ""          #: a version whose delta failed: ask for full
    #: partition number (str) -> the version it holds, as far as this engine knows:
    #: the running one, or one it wrote and verified; dropped before it writes a slot
    slot_versions: dict = dataclasses.field(default_factory=dict)
    last_check: float = 0.0
    last_error: str = ""
    last_error_code: int = 0
    #: events not yet delivered: [type, result, errorcode or None, previousversion or None]
    pending_events: list = dataclasses.field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        doc = dataclasses.asdict(self)
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> EngineState:
        names = {field.name for field in dataclasses.fields(cls)}
        values = {key: value for key, value in doc.items() if key in names}
        offer = values.pop("offer", None)
        state = cls(**values)
        state.offer = None if offer is None else Offer.from_json(offer)
        return state


class StateStore:
    """``<state dir>/state.json``; ``save`` is atomic (write, fsync, rename).

    :meth:`exclusive` is held while the engine works (a check and its install, a
    mark-good, a reboot step): ``metalcast-agent update check`` run while the daemon
    installs must not write the same slot. update_engine is one daemon that its
    client asks over D-Bus; here each command is an engine, so they take turns.
    """

    def __init__(self, state_dir: str):
        self.dir = Path(state_dir)
        self.path = self.dir / "state.json"
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """The engine lock (flock on ``<state dir>/engine.lock``), or UpdateEngineError
        naming the process that holds it."""
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.dir / "engine.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
                raise UpdateEngineError(
                    f"another update engine (pid {holder}) is working on this host: "
                    "'metalcast-agent update status' shows its progress; try again when "
                    "it is done") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            yield
        finally:
            os.close(fd)

    def load(self) -> EngineState:
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
            if not isinstance(doc, dict):
                raise ValueError("not a JSON object")
            return EngineState.from_json(doc)
        except FileNotFoundError:
            return EngineState()
        except (ValueError, TypeError, KeyError, OSError) as exc:
            LOG.error("Update state %s is unreadable (%s); moved aside, starting afresh",
                      self.path, exc)
            try:
                os.replace(self.path, self.path.with_suffix(".json.bad"))
            except OSError:
                pass
            return EngineState()

    def save(self, state: EngineState) -> None:
        with self._lock:
            self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            temp = self.path.with_suffix(f".json.{os.getpid()}.tmp")
            with open(temp, "w", encoding="utf-8") as handle:
                json.dump(state.to_json(), handle, indent=1, sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, self.path)
            fd = os.open(self.dir, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
