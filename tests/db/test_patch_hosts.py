"""Host patch states live in patch_hosts: a second controller on its own engine (another
conductor) and a restarted one show what the first recorded, on each backend."""
from __future__ import annotations

import threading

import pytest

from conductor.db.patch_hosts import PatchHostRows
from conductor.patching import host_states
from conductor.patching import metadata as md
from conductor.patching.controller import PatchController
from conductor.patching.hosts import HostReport
from conductor.patching.store import PatchStore, RepoState

PATCH = "PH_0001"


class FakeChannel:
    """The host channel: records install requests instead of sending them."""

    def __init__(self):
        self.sent: list[tuple[str, bool, str]] = []

    def install(self, hostname: str, force: bool, request_id: str) -> None:
        self.sent.append((hostname, force, request_id))

    def notify_all(self) -> None:
        pass


def behind(name: str = "compute-0") -> HostReport:
    """A host that still runs the package version before PATCH's."""
    return HostReport(hostname=name, ip="192.0.2.10", nodetype="worker",
                      subfunctions=["worker"], sw_version="1.0", out_of_date=True,
                      installed={"labpkg": "1.0-1@noarch"})


def current(name: str, ip: str, **fields) -> HostReport:
    return HostReport(hostname=name, ip=ip, sw_version="1.0", **fields)


@pytest.fixture
def root(tmp_path):
    """A patch store holding one Applied patch (metadata only: no RPM is needed)."""
    root = tmp_path / "patching"
    meta = md.PatchMetadata(id=PATCH, sw_version="1.0", reboot_required="N",
                            contents=["labpkg-2.0-1.noarch.rpm"])
    PatchStore(root).write_metadata(meta, RepoState.APPLIED)
    return root


def controller(root, engine, channel=None) -> PatchController:
    return PatchController(root, root / "trusted", "1.0", host_rows=PatchHostRows(engine),
                           host_channel=channel)


def _shown(ctl) -> list[dict]:
    return [{k: v for k, v in host.items() if k != "secs_since_ack"}
            for host in ctl.query_hosts()]


def test_a_second_controller_sees_what_the_first_recorded(root, engines):
    channel = FakeChannel()
    first = controller(root, engines(), channel)
    first.report_host(behind())
    first.report_host(current("controller-0", "192.0.2.2", node_is_patched=True,
                              patch_failed=True))
    second = controller(root, engines())
    assert _shown(second) == _shown(first)
    host = {h["hostname"]: h for h in second.query_hosts()}
    assert (host["compute-0"]["patch_current"], host["compute-0"]["installed"]) == \
        (False, {"labpkg": "1.0-1@noarch"})
    assert (host["controller-0"]["requires_reboot"], host["controller-0"]["patch_failed"]) \
        == (True, True)
    assert second.query()["pd"][PATCH]["patchstate"] == "Partial-Apply"
    assert [a.alarm_id for a in second.alarms.list()] == ["900.001", "900.002"]

    # An install sent by the first shows on the second until the report answering it.
    assert first.host_install_async("compute-0").error == ""
    [(_, _, request_id)] = channel.sent
    assert host_state(second, "compute-0") == "installing"
    second.report_host(behind())                       # sent before the install ran
    assert host_state(first, "compute-0") == "installing"
    assert "installing" in first.apply([PATCH]).error
    second.report_host(current("compute-0", "192.0.2.10"), answered=request_id)
    assert host_state(first, "compute-0") == "idle"
    assert first.query()["pd"][PATCH]["patchstate"] == "Applied"

    assert second.drop_host("192.0.2.2").error == ""   # by IP, as sw-patch allows
    assert [h["hostname"] for h in first.query_hosts()] == ["compute-0"]


def host_state(ctl, name: str) -> str:
    return next(h["state"] for h in ctl.query_hosts() if h["hostname"] == name)


def test_a_restart_keeps_the_host_states(root, engines):
    engine = engines()
    first = controller(root, engine)
    first.report_host(behind())
    before = _shown(first)
    engine.dispose()                                   # the conductor stops
    again = controller(root, engines())
    assert _shown(again) == before
    assert again.patch_state(PATCH) == "Partial-Apply"  # loaded at start, no query needed


def test_writes_only_on_change_and_a_lost_write_is_redone(root, engines, monkeypatch):
    rows = PatchHostRows(engines())
    first, second = controller(root, engines()), controller(root, engines())
    first.report_host(behind())
    revision = rows.revisions()["compute-0"]
    first.report_host(behind())                        # nothing new: no write
    assert rows.revisions()["compute-0"] == revision
    second.query_hosts()                               # the second knows the host now
    first.report_host(current("compute-0", "192.0.2.10"))
    # The second's copy is stale: its write names an old revision, loses, re-reads
    # and writes again; the first reads the result back.
    second.report_host(current("compute-0", "192.0.2.10", node_is_patched=True))
    [host] = first.query_hosts()
    assert (host["patch_current"], host["requires_reboot"]) == (True, True)
    revision = rows.revisions()["compute-0"]
    monkeypatch.setattr(host_states, "LAST_SEEN_WRITE", 0.0)
    second.report_host(current("compute-0", "192.0.2.10", node_is_patched=True))
    assert rows.revisions()["compute-0"] != revision   # last-seen time, at a bounded rate


def test_a_changed_report_wakes_the_waiter_and_a_repeat_does_not(root, engines,
                                                                   monkeypatch):
    """The orchestration runner waits on ``host_changed``: a host that finishes its
    install wakes it at once; a heartbeat that repeats the last report (even one that
    refreshes the row's last-seen time) does not."""
    changed = threading.Event()
    ctl = PatchController(root, root / "trusted", "1.0",
                          host_rows=PatchHostRows(engines()), host_changed=changed)
    ctl.report_host(behind())                          # a new host
    assert changed.is_set()
    changed.clear()
    monkeypatch.setattr(host_states, "LAST_SEEN_WRITE", 0.0)
    ctl.report_host(behind())                          # the same again: row touched only
    assert not changed.is_set()
    ctl.report_host(current("compute-0", "192.0.2.10"))  # installed: patch-current
    assert changed.is_set()
    [host] = ctl.query_hosts()
    assert host["patch_current"] is True
