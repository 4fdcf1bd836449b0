"""The update engine's state machine with fakes of its narrow collaborators (Omaha
client, slot layout, installer, reboot strategy): events in order, restart safety,
delta fallback, rollback detection, undelivered events kept."""
from __future__ import annotations

import dataclasses

import pytest

from ramdisk_agent.errors import UpdateEngineError
from ramdisk_agent.host.slots import SlotBits
from ramdisk_agent.host.update import state as st
from ramdisk_agent.host.update.engine import UpdateEngine
from ramdisk_agent.host.update.health import HealthGate
from ramdisk_agent.host.update.reboot import Rebooter
from ramdisk_agent.host.update.slotdev import SlotRef
from ramdisk_agent.wire import omaha

A = SlotRef(3, "USR-A", "a" * 8, 1 << 20, 8 << 20)
B = SlotRef(4, "USR-B", "b" * 8, 9 << 20, 8 << 20)


def offer(version="2.0.0", delta=False, name="f" * 64) -> omaha.UpdateCheck:
    manifest = omaha.Manifest(version, (omaha.Package(name, 4096),), bytes.fromhex(name),
                              is_delta=delta,
                              signature=None if delta else bytes(64))
    return omaha.UpdateCheck("ok", ("http://appliance/updates/v1/payloads/",), manifest)


class FakeClient:
    def __init__(self, *answers: omaha.UpdateCheck):
        self.answers = list(answers)
        self.asked: list[bool] = []
        self.events: list[tuple[int, int, int | None]] = []
        self.down = False

    def check(self, *, delta_okay: bool, interactive: bool, passive_version: str = ""
              ) -> omaha.UpdateCheck:
        self.asked.append(delta_okay)
        return self.answers.pop(0) if self.answers else omaha.UpdateCheck("noupdate")

    def event(self, event: omaha.Event, *, version=None) -> None:
        if self.down:
            raise UpdateEngineError("appliance unreachable", 2)
        self.events.append((event.type, event.result, event.error_code))

    def ping(self) -> None:
        if self.down:
            raise UpdateEngineError("appliance unreachable", 2)


class FakeGpt:
    def __init__(self):
        self.bits_of = {3: SlotBits(1, 0, True), 4: SlotBits(0, 0, False)}

    def bits(self, number):
        return self.bits_of[number]

    def mark_good(self, number):
        self.bits_of[number] = dataclasses.replace(self.bits_of[number], successful=True,
                                                   tries=0)

    def prioritize(self, number):
        other = 4 if number == 3 else 3
        self.bits_of[number] = dataclasses.replace(self.bits_of[number], priority=2)
        self.bits_of[other] = dataclasses.replace(self.bits_of[other], priority=1)


class FakeLayout:
    def __init__(self, active=A):
        self.active, self.gpt = active, FakeGpt()

    def active_and_passive(self):
        return (A, B) if self.active == A else (B, A)


class FakeInstaller:
    def __init__(self):
        self.calls, self.fail_delta, self.crash_at = [], False, None

    def install(self, offer, active, passive, *, resume_from, checkpoint, progress):
        self.calls.append((offer.version, offer.is_delta, resume_from, passive.number))
        if offer.is_delta and self.fail_delta:
            raise UpdateEngineError("source differs", 28)
        if self.crash_at is not None:
            checkpoint(self.crash_at)
            raise KeyboardInterrupt("killed")    # the process dies mid-write
        progress(1.0)


@pytest.fixture
def world(tmp_path):
    class World:
        store = st.StateStore(str(tmp_path / "state"))
        installer = FakeInstaller()
        layout = FakeLayout()
        reboot_required = tmp_path / "reboot-required"

        def engine(self, client, version="1.0.0", boot="boot-1", active=A):
            self.layout.active = active
            return UpdateEngine(store=self.store, client=client, layout=self.layout,
                                installer=self.installer,
                                health=HealthGate((), (), 0.0, appliance=client.ping),
                                rebooter=Rebooter("off", None, None, ["true"]),
                                version=version, boot_id=boot,
                                reboot_required_file=str(self.reboot_required))
    return World()


def test_an_offer_is_installed_with_the_contract_events(world):
    client = FakeClient(offer())
    state = world.engine(client).check()
    assert state.status == st.NEED_REBOOT and state.new_version == "2.0.0"
    assert client.events == [(13, 1, None), (14, 1, None), (3, 1, None), (800, 1, None)]
    assert world.installer.calls == [("2.0.0", False, 0, 4)]
    assert world.reboot_required.exists()
    again = world.store.load()
    assert (again.installed_version, again.previous_version) == ("2.0.0", "1.0.0")
    assert world.engine(client).check().status == st.NEED_REBOOT   # pings, no new install
    assert len(world.installer.calls) == 1


def test_a_restart_mid_write_resumes_from_the_checkpoint(world):
    world.installer.crash_at = 64 << 20
    with pytest.raises(KeyboardInterrupt):
        world.engine(FakeClient(offer())).check()
    saved = world.store.load()
    assert saved.status == st.DOWNLOADING and saved.checkpoint == 64 << 20
    world.installer.crash_at = None
    world.engine(FakeClient(offer())).check()
    assert world.installer.calls[-1] == ("2.0.0", False, 64 << 20, 4)


def test_another_payload_starts_over(world):
    world.installer.crash_at = 64 << 20
    with pytest.raises(KeyboardInterrupt):
        world.engine(FakeClient(offer())).check()
    world.installer.crash_at = None
    world.engine(FakeClient(offer("2.0.1", name="e" * 64))).check()
    assert world.installer.calls[-1] == ("2.0.1", False, 0, 4)


def test_a_failed_delta_is_reported_and_the_full_image_asked_for(world):
    world.installer.fail_delta = True
    client = FakeClient(offer(delta=True), offer())
    state = world.engine(client).check()
    assert client.asked == [True, False]
    assert (3, 0, 28) in client.events and state.status == st.NEED_REBOOT
    assert [call[1] for call in world.installer.calls] == [True, False]
    assert world.store.load().delta_refused == ""          # cleared once installed


def test_rollback_is_detected_on_the_next_boot(world):
    client = FakeClient(offer())
    world.engine(client).check()
    client.events.clear()
    state = world.engine(client, version="1.0.0", boot="boot-2").check()
    assert client.events == [(3, 0, 44)]
    assert state.last_error_code == 44 and state.status == st.IDLE
    assert state.installed_version == ""


def test_completion_waits_for_the_health_gate(world):
    client = FakeClient(offer())
    world.engine(client).check()
    client.events.clear()
    new_boot = world.engine(client, version="2.0.0", boot="boot-2", active=B)
    new_boot.check()
    assert client.events == []                              # not healthy yet
    assert new_boot.mark_good().ok
    assert client.events == [(3, 2, None)]
    assert world.layout.gpt.bits_of[4].successful


def test_unhealthy_boot_is_not_marked_and_then_rolls_back(world):
    client = FakeClient(offer())
    world.engine(client).check()
    client.down = True                                      # the appliance is not reached
    assert not world.engine(client, "2.0.0", "boot-2", B).mark_good().ok
    assert not world.layout.gpt.bits_of[4].successful
    client.down = False
    client.events.clear()
    world.engine(client, "1.0.0", "boot-3").check()
    assert client.events == [(3, 0, 44)]


def test_undelivered_events_are_kept_and_sent_later(world):
    client = FakeClient(offer())
    client.down = True
    world.engine(client).check()
    assert len(world.store.load().pending_events) == 4
    client.down = False
    world.engine(client).check()
    assert client.events == [(13, 1, None), (14, 1, None), (3, 1, None), (800, 1, None)]
    assert world.store.load().pending_events == []


def test_a_corrupt_state_file_is_moved_aside(world):
    world.store.dir.mkdir(parents=True)
    world.store.path.write_text("{not json")
    assert world.store.load() == st.EngineState()
    assert world.store.path.with_suffix(".json.bad").exists()


def test_two_engines_take_turns(world):
    """The daemon mid-install and 'update check' at the same time: the second is told
    who works and what to do, and writes nothing."""
    engine = world.engine(FakeClient(offer()))
    with world.store.exclusive():
        with pytest.raises(UpdateEngineError, match=r"another update engine \(pid \d+\)"):
            engine.check()
        with pytest.raises(UpdateEngineError, match="update status"):
            engine.mark_good()
    assert world.installer.calls == []
    assert engine.check().status == st.NEED_REBOOT


class InProgressClient(FakeClient):
    """The appliance after a kill mid-download: the instance is still 'downloading'."""

    def check(self, *, delta_okay: bool, interactive: bool, passive_version: str = ""
              ) -> omaha.UpdateCheck:
        self.asked.append(delta_okay)
        raise UpdateEngineError("refused", 34, details="error-updateInProgressOnInstance")


def test_an_update_the_server_counts_in_progress_is_resumed(world):
    world.installer.crash_at = 64 << 20
    with pytest.raises(KeyboardInterrupt):
        world.engine(FakeClient(offer())).check()
    world.installer.crash_at = None
    state = world.engine(InProgressClient()).check()
    assert state.status == st.NEED_REBOOT
    assert world.installer.calls[-1] == ("2.0.0", False, 64 << 20, 4)


def test_in_progress_without_a_saved_offer_is_an_error(world):
    with pytest.raises(UpdateEngineError, match="refused"):
        world.engine(InProgressClient()).check()
    assert world.store.load().failures == 1 and world.installer.calls == []
