"""Virtual lab machines (virtlab.lab) booting for real.

Each test runs ``python -m virtlab.lab`` (its own BMC process included) and
checks what the simulated machines did through their status files:

* from disk: a GPT + ext4 image built by virtlab.images boots and reports its
  os-release version; a garbage or blank disk reports "no bootable device";
  power comes from the real ``ipmitool`` talking IPMI to the lab's BMCs;
* over the network: a real ``metalcast serve`` (TFTP + HTTP boot servers, the
  ``ipmi`` hardware type with the ``ipxe`` boot and ``direct`` deploy
  interfaces) cleans and deploys a machine: the firmware fetches the loader and
  ``boot.ipxe`` over TFTP, chains to the node's iPXE script over HTTP, downloads
  kernel and initrd, starts the real ``metalcast-agent`` against the machine's
  disk file; the agent writes the image, powers off, and the machine then boots
  the deployed OS from its disk;
* a power off from the BMC kills a running agent by PID (a power cut);
* an agent that reboots, powers off or dies is reflected in the BMC's state
  (a stand-in for metalcast-agent with the same flags drives those paths).
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys

import pytest

from conductor.netboot import render
from conductor.netboot.http import BootHttpServer
from conductor.netboot.tftp import TftpServer
from tests.functional.conftest import start_server, stop_server
from tests.functional.helpers import api_call, mac, provision, unique, wait_node
from tests.functional.ipmi_peers import PASSWORD, USERNAME, ipmitool_ok, require
from tests.waiting import wait_until
from virtlab import images
from virtlab.lab import start_lab, stop_lab

TFTP_RE = re.compile(r"metalcast TFTP boot server on tftp://(\S+?)/ ")
HTTP_RE = re.compile(r"metalcast HTTP boot server on (http://\S+?)/ ")
WAIT = 120   # seconds: generous for a loaded 2-core machine, never a timing assertion
IMAGE_MIB = 32


def require_image_tools() -> None:
    for tool, package in images.TOOLS.items():
        if not (shutil.which(tool) or os.path.exists(f"/usr/sbin/{tool}")):
            pytest.fail(f"{tool} is not installed: install the Debian package {package}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def lab_factory(tmp_path):
    """Start labs (stopped by PID at the end, checking their agents died with them)."""
    labs = []

    def start(machines, pxe=None, **extra):
        config = {"status_dir": str(tmp_path / "status"),
                  "bmc": {"state_dir": str(tmp_path / "bmc"), "username": USERNAME,
                          "password": PASSWORD},
                  "machines": machines, "tick": 0.05, **extra}
        if pxe:
            config["pxe"] = pxe
        lab = start_lab(config, tmp_path / "lab.json")
        labs.append(lab)
        return lab

    yield start
    for lab in labs:
        pids = [s["agent"]["pid"] for s in map(lab.status, lab.machines) if s["agent"]]
        stop_lab(lab)
        assert not _pid_alive(lab.pid)
        assert not any(_pid_alive(pid) for pid in pids), "an agent outlived the lab"


def _wait_for(check, what: str, timeout: float = WAIT) -> None:
    wait_until(check, timeout, 0.2, what)


def _blocks_differing(a, b, block: int = 4096) -> int:
    count = 0
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while chunk := fa.read(block):
            count += chunk != fb.read(block)
    return count


def _events(status: dict) -> str:
    return "\n".join(e["event"] for e in status["events"])


def test_firmware_boots_disk_images_and_refuses_garbage(lab_factory, tmp_path):
    require("ipmitool")
    require_image_tools()
    built = images.build_versions(tmp_path, ("1", "2"), IMAGE_MIB)
    v1, v2 = built["1"], built["2"]
    # Reproducible builds: the versions differ in a few 4 KiB blocks (delta updates).
    assert v1.stat().st_size == v2.stat().st_size == IMAGE_MIB << 20
    assert 0 < _blocks_differing(v1, v2) <= 16
    garbage = tmp_path / "garbage.img"
    garbage.write_bytes(os.urandom(1 << 20) * 4)
    lab = lab_factory([{"name": "good", "mac": mac(), "disk": str(v1)},
                       {"name": "newer", "mac": mac(), "disk": str(v2)},
                       {"name": "garbage", "mac": mac(), "disk": str(garbage)},
                       {"name": "blank", "mac": mac(), "disk": str(tmp_path / "new.img"),
                        "disk_size_mib": 16}])
    assert (tmp_path / "new.img").stat().st_size == 16 << 20   # created, sparse
    for name in lab.machines:
        port = lab.machines[name]["bmc_port"]
        ipmitool_ok(port, "chassis", "bootdev", "disk")
        ipmitool_ok(port, "power", "on")
    good = lab.wait("good", lambda s: s["phase"] == "booted-disk", "booted", WAIT)
    assert good["booted_os"]["version_id"] == "1"
    assert good["booted_os"]["pretty_name"] == "Metalcast Lab OS 1"
    assert good["booted_os"]["fs_label"] == "lab-root" and good["booted_os"]["partition"] == 2
    assert good["power"] == "on" and good["boot_device"] == "disk"
    newer = lab.wait("newer", lambda s: s["phase"] == "booted-disk", "booted", WAIT)
    assert newer["booted_os"]["version_id"] == "2"
    for name in ("garbage", "blank"):
        status = lab.wait(name, lambda s: s["phase"] == "no-boot", "no-boot", WAIT)
        assert status["booted_os"] is None
        assert "no operating system on the disk" in _events(status)
        assert "no bootable device" in _events(status)     # no PXE offer either
    port = lab.machines["good"]["bmc_port"]
    ipmitool_ok(port, "power", "off")
    off = lab.wait("good", lambda s: s["phase"] == "off", "off", WAIT)
    assert off["power"] == "off" and "Chassis Power is off" in ipmitool_ok(
        port, "power", "status")
    # A lab killed outright takes its children along (setpriv --pdeathsig): no leak.
    assert _pid_alive(lab.bmc_pid)
    os.kill(lab.pid, signal.SIGKILL)
    lab.process.wait()
    _wait_for(lambda: not _pid_alive(lab.bmc_pid), "BMC process exit", 10)


# -- network boot against a real metalcast serve ---------------------------------------
@pytest.fixture(scope="module")
def appliance(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("virtlab-pxe"), {
        "pxe": {"enabled": "true", "tftp_port": 0, "http_port": 0,
                "deploy_kernel": "agent/vmlinuz", "deploy_ramdisk": "agent/initramfs",
                "kernel_append_params": "console=ttyS0 ipa-debug=1"},
        "ipmi": {"min_command_interval": 0.05, "command_timeout": 4,
                 "command_retry_timeout": 2, "power_state_timeout": 15},
        "agent": {"post_deploy_power_off_wait": 20, "heartbeat_timeout": 3,
                  "command_wait_interval": 0.2},
        "conductor": {"deploy_callback_timeout": 90, "check_provision_state_interval": 1}})
    output = server.output()
    server.tftp = TFTP_RE.search(output).group(1)
    server.http = HTTP_RE.search(output).group(1)
    agent_dir = server.data_dir / "httpboot" / "agent"
    agent_dir.mkdir(parents=True)
    (agent_dir / "vmlinuz").write_bytes(b"lab kernel\n" * 4096)
    (agent_dir / "initramfs").write_bytes(b"lab initramfs\n" * 8192)
    yield server
    stop_server(server.process)


def _enrol(server, bmc_port: int, address: str, **fields) -> str:
    node = api_call(server.url, "POST", "/v1/nodes", {
        "name": unique("lab"), "driver": "ipmi", "boot_interface": "ipxe",
        "driver_info": {"ipmi_address": "127.0.0.1", "ipmi_port": bmc_port,
                        "ipmi_username": USERNAME, "ipmi_password": PASSWORD},
        **fields}, ok=(201,))
    api_call(server.url, "POST", "/v1/ports", {"node_uuid": node["uuid"], "address": address},
             ok=(201,))
    return node["uuid"]


def _pxe(server) -> dict:
    return {"tftp": server.tftp, "loader": "undionly.kpxe", "script": "boot.ipxe"}


def test_pxe_clean_deploy_then_boot_the_deployed_disk(appliance, lab_factory, tmp_path):
    require("ipmitool")
    require_image_tools()
    image = images.build_image(appliance.data_dir / "httpboot" / "lab-v1.img", "1", IMAGE_MIB)
    digest = hashlib.sha256(image.read_bytes()).hexdigest()
    address = mac()
    lab = lab_factory([{"name": "m1", "mac": address, "disk": str(tmp_path / "m1.img"),
                        "disk_size_mib": 64}], pxe=_pxe(appliance))
    uuid = _enrol(appliance, lab.machines["m1"]["bmc_port"], address,
                  deploy_interface="direct",
                  instance_info={"image_source": f"{appliance.http}/lab-v1.img",
                                 "image_os_hash_algo": "sha256",
                                 "image_os_hash_value": digest})
    provision(appliance.url, uuid, "manage", "manageable")
    cleaned = provision(appliance.url, uuid, "provide", "available")
    assert cleaned["last_error"] is None, cleaned["last_error"]

    status = lab.status("m1")
    events, hexhyp = _events(status), address.replace(":", "-")
    assert "loaded undionly.kpxe over TFTP" in events
    assert f"ran iPXE script tftp://{appliance.tftp}/boot.ipxe" in events
    assert f"ran iPXE script {appliance.http}/ipxe/{hexhyp}.ipxe" in events
    assert f"kernel {appliance.http}/agent/vmlinuz ({11 * 4096} bytes)" in events
    cmdline = (tmp_path / "status" / "m1" / "cmdline").read_text().split()
    assert f"ipa-api-url={appliance.url}" in cmdline and f"BOOTIF=01-{hexhyp}" in cmdline
    assert "ipa-debug=1" in cmdline
    # Cleaning ends with the conductor's IPMI power off: a power cut for the agent.
    assert status["last_agent"]["power_event"] == "power-cut"
    assert status["phase"] == "off" and status["power"] == "off"
    assert not _pid_alive(status["last_agent"]["pid"])

    active = provision(appliance.url, uuid, "active", "active")
    assert active["last_error"] is None, active["last_error"]
    booted = lab.wait("m1", lambda s: s["phase"] == "booted-disk", "booted from disk", WAIT)
    assert booted["booted_os"]["version_id"] == "1" and booted["boot_device"] == "disk"
    assert booted["boots"] == 3                       # clean, deploy, instance
    # The deploy ends with the agent's own standby.power_off, seen by the BMC.
    assert booted["last_agent"]["power_event"] == "power_off"
    assert "agent powered the machine off" in _events(booted)
    assert (tmp_path / "status" / "m1" / "agent.log").read_text().count("--- boot") == 2
    assert active["power_state"] == "power on"

    api_call(appliance.url, "PUT", f"/v1/nodes/{uuid}/states/power", {"target": "power off"},
             ok=(202,))
    wait_node(appliance.url, uuid, lambda n: n["power_state"] == "power off", "off")
    lab.wait("m1", lambda s: s["phase"] == "off", "powered off", WAIT)


def test_power_off_from_the_bmc_kills_the_agent(appliance, lab_factory, tmp_path):
    require("ipmitool")
    address = mac()
    lab = lab_factory([{"name": "m2", "mac": address, "disk": str(tmp_path / "m2.img"),
                        "disk_size_mib": 16}], pxe=_pxe(appliance))
    port = lab.machines["m2"]["bmc_port"]
    # The fake deploy renders the iPXE config (and sets boot device pxe over IPMI),
    # then holds the node in "deploying" for fake_delay seconds without powering it
    # (long enough for this test on a loaded machine), then boots the node from disk.
    uuid = _enrol(appliance, port, address, deploy_interface="fake",
                  automated_clean=False)
    provision(appliance.url, uuid, "manage", "manageable")
    provision(appliance.url, uuid, "provide", "available")
    api_call(appliance.url, "PATCH", f"/v1/nodes/{uuid}",
             [{"op": "add", "path": "/driver_info/fake_delay", "value": 10}])
    api_call(appliance.url, "PUT", f"/v1/nodes/{uuid}/states/provision", {"target": "active"},
             ok=(202,))
    wait_node(appliance.url, uuid, lambda n: n["provision_state"] == "deploying", "deploying")
    _wait_for(lambda: "Force PXE" in ipmitool_ok(port, "chassis", "bootparam", "get", "5"),
              "the conductor's boot device pxe")
    assert lab.status("m2")["phase"] == "off" and lab.status("m2")["boots"] == 0
    ipmitool_ok(port, "power", "on")
    running = lab.wait("m2", lambda s: s["phase"] == "agent", "running the agent", WAIT)
    pid = running["agent"]["pid"]
    assert _pid_alive(pid)
    assert f"BOOTIF=01-{address.replace(':', '-')}" in running["agent"]["cmdline"]
    ipmitool_ok(port, "power", "off")
    off = lab.wait("m2", lambda s: s["phase"] == "off", "off", WAIT)
    assert off["agent"] is None and off["last_agent"]["pid"] == pid
    assert off["last_agent"]["power_event"] == "power-cut"
    assert off["last_agent"]["exit_code"] == -9          # SIGKILL: a power cut
    assert not _pid_alive(pid)
    # The fake deploy ends: boot device disk, power on. The blank disk falls through
    # to PXE, whose config is gone now: the generic script exits, nothing boots.
    wait_node(appliance.url, uuid, lambda n: n["provision_state"] == "active", "active")
    final = lab.wait("m2", lambda s: s["phase"] == "no-boot", "no-boot", WAIT)
    assert final["boots"] == 2 and final["boot_device"] == "disk"
    assert f"no boot configuration for {address}" in _events(final)


def test_lab_runner_refuses_a_bad_config_with_the_reason(tmp_path):
    config = tmp_path / "lab.json"
    config.write_text('{"status_dir": "%s", "bmc": {"state_dir": "%s"}, "machines": '
                      '[{"name": "a", "mac": "not-a-mac", "disk": "/nonexistent"}]}'
                      % (tmp_path / "s", tmp_path / "b"))
    done = subprocess.run([sys.executable, "-m", "virtlab.lab", "--config", str(config)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "not a MAC address" in done.stderr and str(config) in done.stderr
    assert not (tmp_path / "b").exists()           # nothing started, nothing written
    config.write_text("{not json")
    done = subprocess.run([sys.executable, "-m", "virtlab.lab", "--config", str(config)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "bad config" in done.stderr


#: Stands in for metalcast-agent (same flags) to drive the lab's other power paths:
#: the first boot of REBOOTER reboots, the next one powers off; CRASHER just exits.
STAND_IN_AGENT = r'''
import json, pathlib, sys
args = sys.argv[1:]
state = pathlib.Path(args[args.index("--state-file") + 1])
cmdline = pathlib.Path(args[args.index("--cmdline-file") + 1]).read_text()
if "BOOTIF=01-@CRASHER@" in cmdline:
    sys.exit(3)
seen = state.with_name("stand-in-boots")
count = int(seen.read_text()) if seen.exists() else 0
seen.write_text(str(count + 1))
state.write_text(json.dumps({"event": "reboot" if count == 0 else "power_off"}))
'''


@pytest.fixture
def boot_servers(tmp_path):
    """TFTP + HTTP boot servers with metalcast's rendered configs (no conductor)."""
    tftp = TftpServer(tmp_path / "tftpboot", "127.0.0.1", 0)
    http = BootHttpServer(tmp_path / "httpboot", "127.0.0.1", 0)
    (tmp_path / "httpboot" / "agent").mkdir(parents=True)
    (tmp_path / "httpboot" / "agent" / "vmlinuz").write_bytes(b"k" * 1000)
    (tmp_path / "httpboot" / "agent" / "initramfs").write_bytes(b"i" * 1000)
    tftp.start()
    http.start()
    renderer = render.Renderer(tmp_path / "tftpboot", tmp_path / "httpboot", http.url)
    renderer.install()
    yield renderer, f"127.0.0.1:{tftp.port}", http.url
    http.stop()
    tftp.stop()


def _node_boot(renderer, http, address):
    renderer.write(render.NodeBoot(
        "00000000-0000-0000-0000-000000000001", "n", (address,), "ipxe",
        render.Checked(f"{http}/agent/vmlinuz"), render.Checked(f"{http}/agent/initramfs"),
        (render.Checked("ipa-api-url=http://127.0.0.1:9"),)))


def test_agent_reboot_power_off_and_crash_reach_the_bmc(boot_servers, lab_factory, tmp_path):
    require("ipmitool")
    renderer, tftp, http = boot_servers
    rebooter, crasher = mac(), mac()
    for address in (rebooter, crasher):
        _node_boot(renderer, http, address)
    script = tmp_path / "stand_in_agent.py"
    script.write_text(STAND_IN_AGENT.replace("@CRASHER@", crasher.replace(":", "-")))
    lab = lab_factory([{"name": "r", "mac": rebooter, "disk": str(tmp_path / "r.img"),
                        "disk_size_mib": 8},
                       {"name": "c", "mac": crasher, "disk": str(tmp_path / "c.img"),
                        "disk_size_mib": 8}],
                      pxe={"tftp": tftp}, agent_command=[sys.executable, str(script)])
    for name in ("r", "c"):
        port = lab.machines[name]["bmc_port"]
        ipmitool_ok(port, "chassis", "bootdev", "pxe")       # one-time override
        ipmitool_ok(port, "power", "on")
    # Reboot: the BMC boots again (the one-time pxe override was used up, so from the
    # blank disk, which falls through to PXE), the second agent powers off.
    done = lab.wait("r", lambda s: s["phase"] == "off" and s["boots"] == 2, "off", WAIT)
    assert done["last_agent"]["power_event"] == "power_off"
    events = _events(done)
    assert "agent rebooted the machine" in events and "agent powered the machine off" in events
    assert done["boot_device"] == "disk" and "no operating system on the disk" in events
    assert "Chassis Power is off" in ipmitool_ok(lab.machines["r"]["bmc_port"], "power",
                                                 "status")
    crashed = lab.wait("c", lambda s: s["phase"] == "agent-exited", "agent-exited", WAIT)
    assert crashed["last_agent"]["exit_code"] == 3 and crashed["power"] == "on"
