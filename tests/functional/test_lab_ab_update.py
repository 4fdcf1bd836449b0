"""Lab machines as installed A/B hosts (issue 16 item 6), against ``metalcast serve``.

Three lab machines (virtlab.machine with an ``update_conf``) boot A/B disks at v1 over
their real IPMI BMCs; each boot's firmware picks the slot from the GPT bits (gptprio)
and the machine runs the real ``metalcast-agent update mark-good`` then ``update
daemon`` (REBOOT_STRATEGY=lease, REBOOT_COMMAND = the BMC's power reset through its
state file). The appliance's channel moves to v2: every host installs into USR-B and
reboots under a lease of max 1 - no two reboot windows overlap (read from the lab's
events and the engines' logs, not only sampled), never more than one host rebooting
or holding the lease at any sample. Then, in safe mode, a broken v3 (its health check
fails): the first host installs it into USR-A, boots it once, fails health, resets
itself, the firmware falls back to USR-B (v2) and the engine reports the rollback
(event 3, result 0, error code 44): the instance shows error 44, the group is halted,
and no other host takes v3. A power off from the appliance kills the host's engine.
"""
from __future__ import annotations

import datetime
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cli.client import Client
from ramdisk_agent.host.slots import SlotDisk
from tests.functional.tools import require_all
from tests.waiting import wait_until
from virtlab import host_tools
from virtlab.demo import ab_update
from virtlab.demo import lab as demo_lab
from virtlab.lab import stop_lab
from virtlab.machine import Machine, MachineSpec
from virtlab.state import MachineState, StateFile

LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*marked good on version "
                      r"(\S+)", re.M)


@pytest.fixture
def fleet(tmp_path):
    require_all(["sgdisk", "mkfs.ext4", "losetup"])
    if os.geteuid() != 0:
        pytest.fail("the host update engine writes a slot of the lab's disk image through a "
                    "loop device: run this test as root")
    appliance = demo_lab.start_appliance(tmp_path / "appliance")
    labs: list = []
    try:
        client = Client(appliance.url)
        payloads = ab_update.build_payloads(tmp_path / "payloads", ("1", "2", "3"),
                                            broken=("3",))
        ab_update.upload(client, payloads["1"], "1")
        client.request("PUT", f"{ab_update.BASE}/leases/{ab_update.CHANNEL}",
                       body={"max": 1})
        hosts = ab_update.AbFleet(appliance, client, tmp_path / "lab")
        labs.append(hosts.start(payloads["1"]))
        hosts.power_on()
        yield hosts, client, payloads
    finally:
        for lab in labs:
            stop_lab(lab)
        appliance.stop()


def _marked_good(hosts: ab_update.AbFleet, name: str, version: str) -> float:
    log = (hosts.work / "status" / name / "update.log").read_text()
    stamps = [m.group(1) for m in LOG_TIME.finditer(log) if m.group(2) == version]
    assert stamps, f"{name} never marked v{version} good:\n{log[-3000:]}"
    return datetime.datetime.strptime(stamps[-1], "%Y-%m-%d %H:%M:%S,%f").timestamp()


def _reset_times(hosts: ab_update.AbFleet, name: str, after: float) -> list[float]:
    assert hosts.lab is not None
    return [e["time"] for e in hosts.lab.status(name)["events"]
            if e["source"] == "power" and e["event"].startswith("reset by the BMC")
            and e["time"] >= after]


def test_lab_hosts_update_one_at_a_time_and_a_broken_image_rolls_back(fleet):
    hosts, client, payloads = fleet
    hosts.wait(lambda rows: all(r["status"] == "checking" and r["instance"]
                                for r in rows.values()), "check-in at v1", 60)
    hosts.reset_counters()
    moved = time.time()
    ab_update.upload(client, payloads["2"], "2")
    rows = hosts.wait(hosts.rows_at("2"), "the rollout to v2")
    assert {r["slot"] for r in rows.values()} == {ab_update.SLOT_B}, rows
    assert hosts.rebooting_at_once <= 1 and hosts.holders_at_once <= 1, \
        (hosts.rebooting_at_once, hosts.holders_at_once)
    windows = []
    for name in hosts.names:
        resets = _reset_times(hosts, name, moved)
        assert len(resets) == 1, (name, resets)      # exactly one reboot for the update
        windows.append((resets[0], _marked_good(hosts, name, "2"), name))
    windows.sort()
    for (_start, end, first), (start, _end, second) in zip(windows, windows[1:]):
        assert start > end, f"{second} rebooted before {first} was healthy: {windows}"
    for name in hosts.names:
        bits = SlotDisk(str(hosts.work / f"{name}.img")).bits(ab_update.SLOT_B)
        assert bits.successful and bits.priority > 0, (name, bits)

    _broken_v3_rolls_back(hosts, client, payloads["3"])
    _power_off_kills_the_engine(hosts, client)


def _broken_v3_rolls_back(hosts: ab_update.AbFleet, client: Client, payload: Path) -> None:
    client.request("PUT", f"{ab_update.BASE}/groups/{ab_update.CHANNEL}",
                   body={"safe_mode": True})
    ab_update.upload(client, payload, "3")

    def rolled_back() -> str | None:
        for name in hosts.names:
            instance = hosts.instance(name) or {}
            if instance.get("status") == "error" and instance.get("error_code") == 44:
                return name
        return None
    victim = wait_until(rolled_back, timeout=120, message=lambda: repr(
        {n: hosts.row(n) for n in hosts.names}))
    status = hosts.lab.status(victim)                      # type: ignore[union-attr]
    assert status["booted_os"]["version_id"] == "2", status["booted_os"]
    assert status["booted_os"]["partition"] == ab_update.SLOT_B
    log = Path(status["agent"]["log"]).read_text()
    assert "Not marked good" in log and "v3" not in status["booted_os"]["pretty_name"]
    events = " | ".join(e["event"] for e in status["events"])
    assert "chose partition 2" in events and "booted Metalcast Lab OS 3" in events, events
    disk = SlotDisk(str(hosts.work / f"{victim}.img"))
    a_bits = disk.bits(ab_update.SLOT_A)
    assert not a_bits.successful and a_bits.tries == 0, a_bits
    group = client.request("GET", f"{ab_update.BASE}/groups/{ab_update.CHANNEL}")
    assert group["halted_reason"], group
    time.sleep(2)                          # a few more checks: nobody else takes v3
    for name in hosts.names:
        assert hosts.row(name)["version"] == "2", hosts.row(name)


def _power_off_kills_the_engine(hosts: ab_update.AbFleet, client: Client) -> None:
    name = hosts.names[0]
    pid = hosts.lab.status(name)["agent"]["pid"]           # type: ignore[union-attr]
    client.set_power_state(hosts.uuids[name], "power off")
    status = hosts.lab.wait(name, lambda s: s["phase"] == "off", "powered off")  # type: ignore[union-attr]
    assert status["agent"] is None and status["last_agent"]["power_event"] == "power-cut"
    wait_until(lambda: not Path(f"/proc/{pid}").exists(), timeout=10)


def test_host_tools_reset_is_the_bmc_reset_and_health_reads_os_release(tmp_path):
    store = StateFile(tmp_path / "bmc.json")
    store.save(MachineState(power="off", boots=3))
    assert host_tools.main(["reset", str(tmp_path / "bmc.json")]) == 1   # off: refused
    assert store.load().boots == 3
    store.update(lambda s: setattr(s, "power", "on"))
    assert host_tools.main(["reset", str(tmp_path / "bmc.json")]) == 0
    state = store.load()
    assert (state.boots, state.last_boot_device) == (4, "disk")
    good, bad = tmp_path / "good", tmp_path / "bad"
    good.write_text('VERSION="2"\n')
    bad.write_text(f'VERSION="3"\n{host_tools.BROKEN}\n')
    assert host_tools.main(["health", str(good)]) == 0
    assert host_tools.main(["health", str(bad)]) == 1
    assert host_tools.main(["health", str(tmp_path / "missing")]) == 1


@pytest.mark.parametrize("conf", [None, "GARBAGE LINE\n", "NO_SUCH_KEY=1\n"])
def test_a_missing_or_bad_update_conf_boots_without_a_reboot_loop(tmp_path, conf):
    """A host whose update.conf is missing or refused boots and stays up: the engine says
    why and ends (exit 2), it does not reset the machine (no fix comes from a reboot)."""
    require_all(["sgdisk", "mkfs.ext4"])
    payload = ab_update.build_payloads(tmp_path / "payloads", ("1",))["1"]
    disk = ab_update.build_disk(tmp_path / "disk.img", payload, "1")
    conf_path = tmp_path / "update.conf"
    if conf is not None:
        conf_path.write_text(conf)
    spec = MachineSpec("host-x", "52:54:00:6d:01:01", str(disk), update_conf=str(conf_path))
    store = StateFile(tmp_path / "bmc.json")
    store.save(MachineState(power="off"))
    with ThreadPoolExecutor(2) as executor:
        machine = Machine(spec, tmp_path / "bmc.json", tmp_path / "status", None, executor)
        store.update(lambda s: (setattr(s, "power", "on"), setattr(s, "boots", 1)))

        def settled():
            machine.tick()
            return machine.phase == "booted-disk" and machine.agent is None and (
                conf is None or machine.last_agent is not None)
        wait_until(settled, timeout=60, interval=0.05)
        time.sleep(0.5)
        machine.tick()
        events = " | ".join(e["event"] for e in machine.events)
        assert machine.bmc.boots == 1 and machine.phase == "booted-disk", events
        if conf is None:
            assert "update.conf is missing" in events, events
        else:
            assert machine.last_agent["exit_code"] == 2, (machine.last_agent, events)
            log = (tmp_path / "status" / "host-x" / "update.log").read_text()
            assert "update.conf" in log or "KEY=value" in log or "unknown" in log, log
        machine.shutdown()
