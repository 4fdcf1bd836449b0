"""The update engine: check, install, report, mark good, reboot - one state machine
whose state lives in the state dir (state.py), so any step may be interrupted.

Statuses are update_engine's (``UPDATE_STATUS_…``). Events follow the contract:
13/1 download started, 14/1 finished, 3/1 and 800/1 installed; after the reboot 3/2
with ``previousversion`` when the new version runs, or 3/0 errorcode 44 when the
previous one runs again (rollback, spec §1.2); 3/0 with the code of any failure.
Events that cannot be delivered are kept and sent before the next request.
A failed delta is reported and the check is asked again at once with
``delta_okay="false"``, so the full image follows (spec §5).
"""
from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable

from ramdisk_agent.errors import UpdateEngineError
from ramdisk_agent.host.update import state as st
from ramdisk_agent.host.update.client import OmahaClient
from ramdisk_agent.host.update.health import HealthGate, HealthResult
from ramdisk_agent.host.update.install import Installer
from ramdisk_agent.host.update.reboot import Rebooter, Step
from ramdisk_agent.host.update.schedule import Schedule
from ramdisk_agent.host.update.slotdev import SlotLayout
from ramdisk_agent.wire import omaha
from ramdisk_agent.wire import omaha_codes as codes

LOG = logging.getLogger(__name__)
IN_PROGRESS = "error-updateInProgressOnInstance"
Observer = Callable[[st.EngineState], None]



class DeltaFailed(Exception):
    """A delta offer that failed to install: update_engine then asks for the full image."""

    def __init__(self, version: str, error: UpdateEngineError):
        super().__init__(version)
        self.version, self.error = version, error

class UpdateEngine:
    def __init__(self, *, store: st.StateStore, client: OmahaClient | None,
                 layout: SlotLayout, installer: Installer, health: HealthGate,
                 rebooter: Rebooter, version: str, boot_id: str,
                 reboot_required_file: str, schedule: Schedule | None = None,
                 host: str = "", rng: random.Random | None = None, deltas: bool = True,
                 in_place: bool = False):
        self.store, self.client, self.layout = store, client, layout
        self.installer, self.health, self.rebooter = installer, health, rebooter
        self.version, self.boot_id, self.host = version, boot_id, host
        self.reboot_required_file = reboot_required_file
        self.schedule = schedule or Schedule()
        self.rng, self.deltas = rng or random.Random(), deltas
        self.in_place = in_place
        self.poll_interval: float | None = None
        self.observer: Observer = lambda state: None

    # -- checks and installs ------------------------------------------------------
    def status(self) -> st.EngineState:
        return self.store.load()

    def check(self, interactive: bool = False) -> st.EngineState:
        """One update check, and the install it leads to; the state afterwards."""
        with self.store.exclusive():
            return self._check(interactive)

    def _check(self, interactive: bool) -> st.EngineState:
        state = self.store.load()
        self._after_reboot(state)
        if state.status == st.NEED_REBOOT:
            self._flush_events(state)
            self._quietly(lambda: self._client().ping())   # update_engine keeps pinging
            return state
        try:
            self._check_and_install(state, interactive)
        except DeltaFailed as failed:
            LOG.warning("Host %s: delta to %s failed (%s); asking for the full image",
                        self.host, failed.version, failed.error.message)
            state.delta_refused = failed.version
            self._check_and_install(state, interactive, delta_retry=True)
        return state

    def _check_and_install(self, state: st.EngineState, interactive: bool,
                           delta_retry: bool = False) -> None:
        """Ask, and install what is offered; a failed delta (not yet retried) becomes
        :class:`DeltaFailed` so the caller can ask again for the full image."""
        self._set(state, st.CHECKING)
        answer = self._ask(state, interactive)
        if answer is None:
            return
        offer = self._offer(answer, state)
        try:
            self._install(state, offer)
        except UpdateEngineError as exc:
            self._failed(state, exc)
            if offer.is_delta and not delta_retry:
                raise DeltaFailed(offer.version, exc) from exc
            raise

    def _ask(self, state: st.EngineState, interactive: bool) -> omaha.UpdateCheck | None:
        """The server's answer, or None (no update, recorded in ``state``)."""
        self._flush_events(state)
        try:
            answer = self._client().check(delta_okay=self.deltas and not state.delta_refused,
                                          interactive=interactive,
                                          passive_version=self._passive_version(state))
        except UpdateEngineError as exc:
            if exc.details == IN_PROGRESS and state.offer is not None:
                return self._resume_offer(state)
            state.failures += 1
            state.last_error, state.last_error_code = exc.message, exc.omaha_code
            self._set(state, st.IDLE)
            raise
        state.failures, state.last_check = 0, time.time()
        self.poll_interval = answer.poll_interval
        if answer.status != "ok" or answer.manifest is None \
                or answer.manifest.version == self.version:
            self._set(state, st.IDLE)
            return None
        return answer

    def _passive_version(self, state: st.EngineState) -> str:
        """The version the passive slot holds, if this engine wrote and verified it or
        ran it (a delta from it is applied in place; DELTA_IN_PLACE=true names it);
        the active slot runs ours."""
        active, passive = self.layout.active_and_passive()
        state.slot_versions[str(active.number)] = self.version
        return str(state.slot_versions.get(str(passive.number), "")) if self.in_place \
            else ""

    def _resume_offer(self, state: st.EngineState) -> omaha.UpdateCheck:
        """The server still counts this host's interrupted download as in progress (as
        Nebraska does until its update timeout): the offer it granted, from the state."""
        offer = state.offer
        assert offer is not None
        LOG.info("Host %s: the server says our update to %s is in progress; resuming it",
                 self.host, offer.version)
        url, name = offer.url.rsplit("/", 1)
        manifest = omaha.Manifest(offer.version, (omaha.Package(name, offer.size),),
                                  bytes.fromhex(offer.sha256), offer.is_delta,
                                  signature=None if offer.signature is None
                                  else bytes.fromhex(offer.signature),
                                  delta_base="passive" if offer.base == "passive" else "")
        return omaha.UpdateCheck("ok", (url + "/",), manifest)

    def _offer(self, answer: omaha.UpdateCheck, state: st.EngineState) -> st.Offer:
        manifest = answer.manifest
        assert manifest is not None
        _, passive = self.layout.active_and_passive()
        offer = st.Offer(manifest.version, answer.payload_urls[0], manifest.packages[0].size,
                         manifest.sha256.hex(), manifest.is_delta,
                         None if manifest.signature is None else manifest.signature.hex(),
                         passive.number,
                         "passive" if manifest.is_delta and manifest.delta_base == "passive"
                         else "active")
        same = state.offer is not None and (state.offer.sha256, state.offer.slot) == \
            (offer.sha256, offer.slot)
        if not same:
            state.offer, state.checkpoint = offer, 0
        state.new_version, state.new_size, state.progress = offer.version, offer.size, 0.0
        self._set(state, st.AVAILABLE)
        return offer

    def _install(self, state: st.EngineState, offer: st.Offer) -> None:
        active, passive = self.layout.active_and_passive()
        self._event(state, codes.DOWNLOAD_STARTED, codes.RESULT_SUCCESS)
        self._set(state, st.DOWNLOADING)

        def checkpoint(offset: int) -> None:
            state.checkpoint = offset
            self.store.save(state)

        def progress(fraction: float) -> None:
            if fraction - state.progress >= 0.05 or fraction >= 1.0:
                state.progress = round(min(fraction, 1.0), 2)
                self.observer(state)
        state.slot_versions.pop(str(passive.number), None)   # it is being written
        self.store.save(state)
        self.installer.install(offer, active, passive,
                               resume_from=0 if offer.is_delta else state.checkpoint,
                               checkpoint=checkpoint, progress=progress)
        state.slot_versions[str(passive.number)] = offer.version
        self._event(state, codes.DOWNLOAD_FINISHED, codes.RESULT_SUCCESS)
        self._set(state, st.FINALIZING)
        with open(self.reboot_required_file, "w", encoding="utf-8") as handle:
            handle.write(f"metalcast: version {offer.version} installed in slot "
                         f"{passive.label}\n")
        state.installed_version, state.installed_slot = offer.version, passive.number
        state.previous_version, state.install_boot_id = self.version, self.boot_id
        state.offer, state.checkpoint, state.delta_refused = None, 0, ""
        state.progress, state.last_error, state.last_error_code = 1.0, "", 0
        self._set(state, st.NEED_REBOOT)
        self._event(state, codes.UPDATE_COMPLETE, codes.RESULT_SUCCESS)
        self._event(state, codes.INSTALLED, codes.RESULT_SUCCESS)

    def _failed(self, state: st.EngineState, exc: UpdateEngineError) -> None:
        LOG.error("Host %s: update to %s failed: %s (error %d)", self.host, state.new_version,
                  exc.message, exc.omaha_code)
        state.last_error, state.last_error_code = exc.message, exc.omaha_code
        self._set(state, st.REPORTING_ERROR)
        self._event(state, codes.UPDATE_COMPLETE, codes.RESULT_ERROR, exc.omaha_code)
        self._set(state, st.IDLE)

    # -- after the reboot ---------------------------------------------------------
    def _after_reboot(self, state: st.EngineState) -> None:
        """After the reboot that follows an install: complete (3/2) once the new version
        passed its health checks, or rollback (3/0, 44) when the previous one runs."""
        if not state.installed_version or state.install_boot_id == self.boot_id:
            return
        installed, previous = state.installed_version, state.previous_version
        if self.version == installed and state.marked_good != self.boot_id:
            return        # complete only once this boot passed its health checks
        if self.version == installed:
            LOG.info("Host %s: running %s after the update from %s", self.host, installed,
                     previous)
            self._event(state, codes.UPDATE_COMPLETE, codes.RESULT_SUCCESS_REBOOT,
                        previous=previous)
            state.last_error, state.last_error_code = "", 0
        else:
            state.last_error = (f"rollback: version {installed} did not stay (its slot "
                                f"was not marked good); running {self.version} again")
            state.last_error_code = codes.ROLLBACK
            LOG.error("Host %s: %s", self.host, state.last_error)
            self._event(state, codes.UPDATE_COMPLETE, codes.RESULT_ERROR, codes.ROLLBACK,
                        previous=installed)
        state.installed_version, state.installed_slot, state.install_boot_id = "", 0, ""
        state.new_version, state.new_size, state.progress = "", 0, 0.0
        self._set(state, st.IDLE)
        self._flush_events(state)

    # -- mark good, reboot --------------------------------------------------------
    def mark_good(self) -> HealthResult:
        """The health gate now; on success the running slot is marked good and a
        lease from the reboot is released."""
        with self.store.exclusive():
            return self._mark_good()

    def _mark_good(self) -> HealthResult:
        state = self.store.load()
        self._after_reboot(state)
        active, passive = self.layout.active_and_passive()
        result = self.health.wait()
        if not result.ok:
            state.last_error = f"health checks failed: {result.detail}"
            self.store.save(state)
            return result
        bits = self.layout.gpt.bits(active.number)
        if not bits.successful or bits.tries:
            self.layout.gpt.mark_good(active.number)
        if not state.installed_version:   # never undo a pending install's priority
            other = self.layout.gpt.bits(passive.number)
            if other.priority >= self.layout.gpt.bits(active.number).priority:
                self.layout.gpt.prioritize(active.number)
        LOG.info("Host %s: slot %s (partition %d) marked good on version %s", self.host,
                 active.label, active.number, self.version)
        state.marked_good = self.boot_id
        self._after_reboot(state)
        if state.lease_held:
            self.rebooter.release(lambda held: setattr(state, "lease_held", held))
        self.store.save(state)
        return result

    def reboot_step(self) -> Step:
        """The reboot strategy once, when an installed update waits for its reboot."""
        with self.store.exclusive():
            state = self.store.load()
            if state.status != st.NEED_REBOOT:
                return Step("nothing-to-do")

            def held(flag: bool) -> None:
                state.lease_held = flag
                self.store.save(state)
            return self.rebooter.step(held)

    def run(self, stop: threading.Event) -> None:
        """The daemon: mark-good once per boot, then checks on the schedule and the
        reboot when one is due."""
        state = self.store.load()
        if state.marked_good != self.boot_id:
            self._quietly(self.mark_good)
        delay = self.schedule.first(self.rng)
        while not stop.wait(delay):
            self._quietly(self.check)
            state = self.store.load()
            delay = self.schedule.next(state.failures, self.rng, self.poll_interval)
            if state.status == st.NEED_REBOOT:
                step = self._quietly(self.reboot_step)
                if isinstance(step, Step) and step.retry_in:
                    delay = min(delay, step.retry_in)

    # -- helpers ------------------------------------------------------------------
    def _client(self) -> OmahaClient:
        if self.client is None:
            raise UpdateEngineError("updates are disabled (SERVER=disabled in update.conf)")
        return self.client

    def _set(self, state: st.EngineState, status: str) -> None:
        state.status = status
        self.store.save(state)
        self.observer(state)

    def _event(self, state: st.EngineState, kind: int, result: int, error: int | None = None,
               previous: str | None = None) -> None:
        state.pending_events.append([kind, result, error, previous])
        self.store.save(state)
        self._flush_events(state)

    def _flush_events(self, state: st.EngineState) -> None:
        if self.client is None:
            return
        while state.pending_events:
            kind, result, error, previous = state.pending_events[0]
            try:
                self.client.event(omaha.Event(kind, result, error, previous))
            except UpdateEngineError as exc:
                LOG.warning("Host %s: event %d/%d not delivered (%s); kept for later",
                            self.host, kind, result, exc.message)
                return
            state.pending_events.pop(0)
            self.store.save(state)

    def _quietly(self, action: Callable[[], object]) -> object:
        try:
            return action()
        except UpdateEngineError as exc:
            LOG.error("Host %s: %s", self.host, exc.message)
            return None
