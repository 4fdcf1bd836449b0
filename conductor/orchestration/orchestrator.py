"""The orchestration facade and its runner: what the API calls, and the thread that
advances the running strategy.

Exactly one strategy exists at a time (the table's one ``slot``); every change is a
write over the revision it read (conductor/db/strategies.py). The runner wakes every
``[orchestration] audit_interval`` seconds (and at once after an apply or abort),
claims the strategy's lease, advances it (lifecycle.advance) and saves it. After a
restart the strategy is read back as it was saved: a running step resumes from what
its ``data`` says it did (steps are safe to start again), so a host locked by the
strategy is unlocked by it in the end, or by its abort. Alarms 900.101-103 follow
each pass (alarms.py).
"""
from __future__ import annotations

import logging
import threading
import time
import uuid as uuidlib
from collections.abc import Callable
from typing import Any

from conductor import errors
from conductor.alarms import AlarmTable
from conductor.config import Settings
from conductor.db.strategies import StrategyRow, StrategyRows
from conductor.orchestration import alarms as strategy_alarms
from conductor.orchestration import lifecycle, options, steps
from conductor.orchestration.fleet import ApplianceFleet
from conductor.orchestration.model import BUSY, State, Strategy
from conductor.orchestration.patch_build import Snapshot

LOG = logging.getLogger(__name__)

ACTIONS = ("apply-all", "apply-stage", "abort", "abort-stage")
#: Strategy types (the path's name, StarlingX's ``name``) -> their create options.
TYPES = {"sw-patch": options.parse, "image-update": options.parse_image}
STAGE_ACTIONS = ("apply-stage", "abort-stage")
#: Writes lost to another writer before an action gives up (409, retry).
SAVE_ATTEMPTS = 5
SW_PATCH = "sw-patch"


def _describe(row: StrategyRow) -> str:
    return f"{row.name} strategy {row.uuid} (state {row.state})"


class Orchestrator:
    """The one strategy of this appliance's database, and the runner of it."""

    def __init__(self, rows: StrategyRows, fleet: ApplianceFleet,
                 alarm_table: AlarmTable, settings: Settings,
                 clock: Callable[[], float] = time.time,
                 wake: threading.Event | None = None):
        self.rows, self.fleet, self.alarm_table = rows, fleet, alarm_table
        self.settings, self.clock = settings, clock
        self.host = settings.conductor.host
        self._lock = threading.RLock()
        #: Set to run a pass now: by an action here, and by whoever else is given it
        #: (the patch controller, when a host's report changes its state).
        self._wake = wake if wake is not None else threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: (revision, rendering) of the last strategy shown: a GET of an unchanged
        #: strategy costs one small query (sw-manager show --watch polls).
        self._shown: tuple[str, dict[str, Any]] | None = None
        #: (revision, strategy) the runner last saved, and when it last touched its
        #: lease: a pass that finds both fresh reads and writes nothing.
        self._running: tuple[str, Strategy] | None = None
        self._claimed: tuple[str, float] = ("", 0.0)

    # -- the API --------------------------------------------------------------------
    def get(self, strategy_uuid: str | None = None,
            name: str | None = None) -> dict[str, Any] | None:
        """The strategy as StarlingX renders it (None: none, not that uuid, or not of
        type ``name``: StarlingX shows a type's path only its own strategy)."""
        shown = self._shown
        if shown is None or self.rows.revision() != shown[0]:
            row = self.rows.get()
            if row is None:
                return None
            shown = self._shown = (row.revision,
                                   Strategy.from_document(row.document).to_api())
        if strategy_uuid is not None and shown[1]["uuid"] != strategy_uuid.lower():
            return None
        if name is not None and shown[1]["name"] != name:
            return None
        return shown[1]

    def create(self, body: dict[str, Any], name: str = SW_PATCH) -> dict[str, Any]:
        chosen = TYPES[name](body)
        with self._lock:
            existing = self.rows.get()
            if existing is not None:
                raise errors.Conflict(f"A strategy already exists: {_describe(existing)}; "
                                      "delete it first.")
            strategy = Strategy(str(uuidlib.uuid4()), name, chosen)
            lifecycle.run_build(strategy, self._snapshot(), self.clock())
            if self.rows.create(strategy.uuid, strategy.name, strategy.state,
                                strategy.to_document()) is None:
                other = self.rows.get()
                raise errors.Conflict("A strategy already exists: "
                                      f"{_describe(other) if other else 'another one'}; "
                                      "delete it first.")
        LOG.info("Strategy %s (%s) created: %s", strategy.uuid, strategy.name, strategy.state)
        return strategy.to_api()

    def delete(self, force: bool, name: str = SW_PATCH) -> dict[str, Any]:
        with self._lock:
            row = self.rows.get()
            if row is None or row.name != name:
                raise errors.NotFound(f"No {name} strategy exists.")
            if row.state in BUSY and not force:
                raise errors.Conflict(f"Cannot delete {_describe(row)} while it is "
                                      f"{row.state}; abort it first, or delete with force.")
            if not self.rows.delete(row.uuid, row.revision):
                raise errors.Conflict(f"{_describe(row)} changed meanwhile; retry.")
            strategy = Strategy.from_document(row.document)
            self._refresh_alarms(None)
        self._warn_locked(strategy)
        LOG.info("Strategy %s deleted%s (was %s)", row.uuid, " with force" if force else "",
                 row.state)
        return strategy.to_api()

    def action(self, body: dict[str, Any], name: str = SW_PATCH) -> dict[str, Any]:
        action, stage_id = _parse_action(body)
        apply = action.startswith("apply")

        def change(strategy: Strategy) -> None:
            if strategy.name != name:
                raise errors.NotFound(f"No {name} strategy exists.")
            try:
                (lifecycle.apply if apply else lifecycle.abort)(strategy, stage_id, self.clock())
            except lifecycle.Refused as exc:
                raise (errors.Conflict if apply else errors.InvalidParameter)(str(exc)) from None

        strategy = self._change(change)
        LOG.info("Strategy %s: %s%s accepted, now %s", strategy.uuid, action,
                 "" if stage_id is None else f" (stage {stage_id})", strategy.state)
        self._wake.set()
        return strategy.to_api()

    def _change(self, change: Callable[[Strategy], None]) -> Strategy:
        with self._lock:
            for _ in range(SAVE_ATTEMPTS):
                row = self.rows.get()
                if row is None:
                    raise errors.NotFound("No strategy exists.")
                strategy = Strategy.from_document(row.document)
                change(strategy)     # raises to refuse
                if self.rows.save(strategy.uuid, strategy.state, strategy.to_document(),
                                  row.revision):
                    self._refresh_alarms(strategy)
                    return strategy
        raise errors.Conflict("The strategy kept changing while the request was processed; "
                              "retry.")

    def _snapshot(self) -> Snapshot:
        return Snapshot(self.fleet.hosts(), self.fleet.patches(), self.fleet.alarms(),
                        self.host)

    # -- the runner -----------------------------------------------------------------
    def run_once(self) -> bool:
        """One pass: advance the running strategy if this conductor owns it; True when
        something changed."""
        with self._lock:
            found = self._current()
            if found is None:
                self._refresh_alarms(None)
                return False
            revision, strategy = found
            if strategy.state not in (State.APPLYING, State.ABORTING):
                self._refresh_alarms(strategy)
                return False
            if not self._claim(strategy.uuid):
                return False                # another conductor runs it
            ctx = steps.Context(strategy.uuid, strategy.options["alarm-restrictions"],
                                self.clock(), self.settings.orchestration.stabilize_factor)
            changed = lifecycle.advance(strategy, self.fleet, ctx)
            if changed:
                saved = self.rows.save(strategy.uuid, strategy.state,
                                       strategy.to_document(), revision)
                if saved is None:
                    self._running = None
                    LOG.warning("Strategy %s changed during a runner pass; the next pass "
                                "re-reads it", strategy.uuid)
                    return False
                self._running = (saved, strategy)
                self._shown = (saved, strategy.to_api())
            self._refresh_alarms(strategy)
        return changed

    def _current(self) -> tuple[str, Strategy] | None:
        """The strategy and its revision: the runner's copy while nobody else wrote."""
        running = self._running
        if running is not None and self.rows.revision() == running[0]:
            return running
        row = self.rows.get()
        self._running = None if row is None else \
            (row.revision, Strategy.from_document(row.document))
        return self._running

    def _claim(self, strategy_uuid: str) -> bool:
        """Hold the runner's lease, touching it at most every third of its length."""
        lease, now = self.settings.orchestration.lease, time.monotonic()
        claimed, at = self._claimed
        if claimed == strategy_uuid and now - at < lease / 3:
            return True
        if not self.rows.claim(strategy_uuid, self.host, lease):
            self._claimed = ("", 0.0)
            return False
        self._claimed = (strategy_uuid, now)
        return True

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="orchestration", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def _loop(self) -> None:
        interval = self.settings.orchestration.audit_interval
        while not self._stop.is_set():
            try:
                while self.run_once() and not self._stop.is_set():
                    pass                    # steps that end at once: run the next now
            except Exception:  # the runner must survive a bad pass
                LOG.exception("Orchestration pass failed")
            self._wake.wait(interval)
            self._wake.clear()

    # -- alarms ---------------------------------------------------------------------
    def _refresh_alarms(self, strategy: Strategy | None) -> None:
        hosts = list(self.fleet.hosts().values()) if strategy is not None and \
            strategy.data.get("apply_failed") else []
        self.alarm_table.set_active(strategy_alarms.IDS,
                                    strategy_alarms.evaluate(strategy, hosts))

    def _warn_locked(self, strategy: Strategy) -> None:
        reason = steps.Context(strategy.uuid, "", 0).lock_reason
        try:
            hosts = self.fleet.hosts()
        except errors.MetalcastError:
            return
        stuck = sorted(name for name, host in hosts.items() if host.locked and
                       host.lock_reason == reason)
        if stuck:
            LOG.warning("Strategy %s deleted while hosts it locked are still locked: %s",
                        strategy.uuid, ", ".join(stuck))


#: A stage id longer than this is no stage of any strategy (and int() of a huge
#: digit string is costly).
MAX_STAGE_ID_DIGITS = 6


def _parse_action(body: dict[str, Any]) -> tuple[str, int | None]:
    unknown = sorted(set(body) - {"action", "stage-id"})
    if unknown:
        raise errors.InvalidParameter(f"Unknown field(s): {', '.join(unknown)}; an action "
                                      "takes 'action' and 'stage-id'.")
    action = body.get("action")
    if action not in ACTIONS:
        raise errors.InvalidParameter(f"Invalid action {action!r}; expected one of "
                                      f"{', '.join(ACTIONS)}.")
    if "stage-id" not in body:
        if action in STAGE_ACTIONS:
            raise errors.InvalidParameter("No stage-id received")
        return action, None
    stage_id = body["stage-id"]        # an explicit null: the whole strategy
    if isinstance(stage_id, str) and stage_id.isascii() and stage_id.isdigit() \
            and len(stage_id) <= MAX_STAGE_ID_DIGITS:
        # StarlingX's sw-manager sends --stage-id as the string it was given ("0");
        # the VIM's wsme integer field converts it, so a digit string is accepted.
        stage_id = int(stage_id)
    if stage_id is not None and (not isinstance(stage_id, int) or isinstance(stage_id, bool)
                                 or stage_id < 0):
        raise errors.InvalidParameter("stage-id must be a non-negative integer (or a string "
                                      "of ASCII digits) or null.")
    return action, stage_id
