"""Patches through the ramdisk (issue 6 item 5): deploy while a patch is Applied.

A real ``metalcast serve`` (its HTTP boot server serves the image, the base feed
and the update repo), a fake-power ``direct`` node whose "disk" is a file, and the
real ``metalcast-agent`` ramdisk process (test_agent_deploy.py's setup). The image
is a GPT disk whose ext4 root (``mkfs.ext4 -d``) holds an rpm database with the
release's base packages, installed by real ``rpm --root``. A patch built by
``sw-patch-build`` (an upgrade, a reboot-required upgrade and a new controller
package) is uploaded and applied with ``sw-patch``; the deploy then runs
``deploy.install_patches`` (``dnf --installroot`` on the root mounted by offset)
before the power off. The written root is read back with ``rpm --root``, and a
real host agent (``metalcast-agent host``) running from that root reports it
patch-current with no host-install and no reboot required.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.functional.conftest import start_server, stop_server
from tests.functional.helpers import api_call, mac, provision, wait_node
from tests.functional.patch_lab import HTTP_RE, hosts, issue_token, wait_for
from tests.functional.rpm_tools import build_rpm
from tests.functional.test_host_patching import BASE_INSTALL, BASE_SH, installed
from tests.functional.test_virtlab_machine import (  # noqa: F401
    TFTP_RE,
    _enrol,
    _pxe,
    lab_factory,
    require_image_tools,
)
from tests.functional.tools import require, require_all
from virtlab import disk as vdisk
from virtlab import images
from virtlab.process import start_ready, stop

BIN = Path(sys.executable).parent
IMAGE_MIB, DISK_MIB = 40, 48
#: the real peers this lab drives (tests.functional.tools.TOOLS names their packages).
TOOLS = ("rpm", "rpmbuild", "dnf", "createrepo_c", "busybox", "mkfs.ext4", "sgdisk", "mount")


def require_tools() -> None:
    require_all(TOOLS)


def make_image(path: Path, rpms: list[Path], work: Path) -> Path:
    """GPT (ESP + Linux root) with an ext4 root holding the base packages' rpm database."""
    root = work / "rootfs"
    (root / "var/lib/rpm").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "etc/hostname").write_text("image-default\n")
    (root / "etc/os-release").write_text(images.os_release("1"))   # the lab boots it
    rpm = ["rpm", "--root", str(root), "--dbpath", "/var/lib/rpm", "-i", "--quiet"]
    subprocess.run([*rpm, str(rpms[0])], check=True, capture_output=True)   # /bin/sh first
    subprocess.run([*rpm, *map(str, rpms[1:])], check=True, capture_output=True)
    with open(path, "wb") as f:
        f.truncate(IMAGE_MIB << 20)
    subprocess.run(["sgdisk", "-n", "1:1MiB:+4MiB", "-t", "1:EF00", "-n", "2:0:0",
                    "-t", "2:8304", str(path)], check=True, capture_output=True)
    _number, offset, size = vdisk.partitions(str(path))[1]
    subprocess.run(["mkfs.ext4", "-q", "-F", "-E", f"offset={offset}", "-d", str(root),
                    str(path), f"{size // 1024}k"], check=True, capture_output=True)
    return path


@contextlib.contextmanager
def mounted_root(disk: Path, mountpoint: Path):
    """Mount the root partition (number 2) of a deployed disk file by byte range."""
    _number, offset, size = vdisk.partitions(str(disk))[1]
    mountpoint.mkdir(exist_ok=True)
    subprocess.run(["mount", "-o", f"loop,offset={offset},sizelimit={size}", str(disk),
                    str(mountpoint)], check=True, capture_output=True)
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True, capture_output=True)


class Lab:
    """The server, the RPMs, the patch, the image and the node."""

    def __init__(self, work: Path):
        self.work = work
        self.server = start_server(work / "data", {
            "pxe": {"enabled": "true", "tftp_port": 0, "http_port": 0,
                    "deploy_kernel": "agent/vmlinuz", "deploy_ramdisk": "agent/initramfs"},
            "patching": {"release": "1.0"},
            "ipmi": {"min_command_interval": 0.05, "command_timeout": 4,
                     "command_retry_timeout": 2, "power_state_timeout": 15},
            "agent": {"post_deploy_power_off_wait": 2, "heartbeat_timeout": 3,
                      "command_wait_interval": 0.2, "command_wait_attempts": 900},
            "conductor": {"deploy_callback_timeout": 90,
                          "check_provision_state_interval": 1}})
        # The names test_virtlab_machine's helpers (_enrol, _pxe) read.
        self.server.tftp = TFTP_RE.search(self.server.output()).group(1)
        self.http = self.server.http = HTTP_RE.search(self.server.output()).group(1)
        www = self.server.data_dir / "httpboot"
        (www / "agent").mkdir()
        (www / "agent" / "vmlinuz").write_bytes(b"lab kernel\n" * 4096)
        (www / "agent" / "initramfs").write_bytes(b"lab initramfs\n" * 8192)
        subprocess.run([BIN / "metalcast", "patch", "keygen", "--data-dir",
                        self.server.data_dir], check=True, capture_output=True)
        b = work / "rpms"
        base = [build_rpm(b, "hostbase", extra_tags=BASE_SH, files="/bin/sh\n/usr/bin/busybox",
                          install=BASE_INSTALL.replace("{busybox}", shutil.which("busybox")))]
        base += [build_rpm(b, name) for name in ("tool", "kern")]
        feed = www / "feed" / "rel-1.0" / "Packages" / "noarch"
        feed.mkdir(parents=True)
        for rpm in base:
            shutil.copy(rpm, feed)
        subprocess.run(["createrepo_c", "-q", str(feed.parent.parent)], check=True)
        self.patch_rpms = [build_rpm(b, "tool", "1.1"), build_rpm(b, "kern", "1.1"),
                           build_rpm(b, "ctlonly")]
        (www / "images").mkdir()
        self.image = make_image(www / "images" / "root.img", base, work)
        self.digest = hashlib.sha256(self.image.read_bytes()).hexdigest()

    def sw_patch(self, *argv) -> subprocess.CompletedProcess:
        env = dict(os.environ, METALCAST_URL=self.server.url)
        return subprocess.run([BIN / "sw-patch", *map(str, argv)], capture_output=True,
                              text=True, env=env, timeout=120)

    def build_patch(self, pid: str) -> Path:
        out = self.work / "patches"
        proc = subprocess.run([BIN / "sw-patch-build", "--id", pid, "--release", "1.0",
                               "--reboot-required", "Y", "--controller", "ctlonly",
                               "--data-dir", self.server.data_dir, "-o", out,
                               *self.patch_rpms], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        return out / f"{pid}.patch"


class Machine:
    """A direct-deploy node with a disk file; deploy() runs one ramdisk agent."""

    def __init__(self, lab: Lab, name: str, **instance_info):
        self.lab, self.mac = lab, mac()
        self.disk = lab.work / f"{name}.disk"
        with open(self.disk, "wb") as f:
            f.write(b"\xee" * (DISK_MIB << 20))
        node = api_call(lab.server.url, "POST", "/v1/nodes", {
            "name": name, "driver": "fake-hardware", "deploy_interface": "direct",
            "properties": {"nodetype": "controller"},
            "instance_info": {"image_source": f"{lab.http}/images/root.img",
                              "image_os_hash_algo": "sha256",
                              "image_os_hash_value": lab.digest, **instance_info}},
            ok=(201,))
        self.uuid, self.name = node["uuid"], name
        api_call(lab.server.url, "POST", "/v1/ports", {"node_uuid": self.uuid,
                                                      "address": self.mac}, ok=(201,))
        api_call(lab.server.url, "PATCH", f"/v1/nodes/{self.uuid}",
                 [{"op": "replace", "path": "/automated_clean", "value": False}])
        for target, state in (("manage", "manageable"), ("provide", "available")):
            self.request(target)
            self.wait((state,))

    def request(self, target: str) -> None:
        api_call(self.lab.server.url, "PUT", f"/v1/nodes/{self.uuid}/states/provision",
                 {"target": target}, ok=(202,))

    def wait(self, states: tuple[str, ...], log: list[str] | None = None) -> dict:
        try:
            return wait_node(self.lab.server.url, self.uuid,
                             lambda n: n["provision_state"] in states
                             and n["reservation"] is None, "/".join(states), 180)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nagent log:\n{''.join((log or [])[-40:])}") from None

    def deploy(self) -> tuple[dict, list[str]]:
        """Deploy; the ramdisk agent runs from "wait call-back" until powered off."""
        self.request("active")
        self.wait(("wait call-back",))
        cmd = [BIN / "metalcast-agent", "--api-url", self.lab.server.url, "--mac", self.mac,
               "--disk", self.disk, "--listen", "127.0.0.1:0", "--advertise-host",
               "127.0.0.1", "--power-action", "exit", "--cmdline-file", "",
               "--state-file", self.lab.work / f"{self.name}.state",
               "--lookup-timeout", "30"]
        agent, _ready, log = start_ready([str(c) for c in cmd], "METALCAST-AGENT ", 60,
                                         f"ramdisk agent {self.name}")
        try:
            return self.wait(("active", "deploy failed"), log), log
        finally:
            stop(agent.pid, agent)


def report_from_root(lab: Lab, uuid: str, name: str, root: Path) -> dict[str, str]:
    """Run a real host agent from ``root`` (the deployed host boots) with a token the
    operator issued (``metalcast host token``); its query-hosts row."""
    state = lab.work / "hoststate" / name
    issue_token(lab.server.url, uuid, state / "host-agent-token.json")
    cmd = [BIN / "metalcast-agent", "host", "--api-url", lab.server.url,
           "--node-uuid", uuid, "--listen", "127.0.0.1:0",
           "--advertise-host", "127.0.0.1", "--state-dir", state,
           "--heartbeat-interval", "2", "--root", root,
           "--cache-dir", lab.work / "hostcache" / name,
           "--base-url", f"{lab.http}/feed/rel-1.0",
           "--updates-url", f"{lab.http}/updates/rel-1.0", "--sw-version", "1.0",
           "--nodetype", "controller"]
    host, _ready, _log = start_ready([str(c) for c in cmd], "METALCAST-AGENT ", 60,
                                     f"host agent {name}")
    try:
        return wait_for(f"{name} reporting", lambda: hosts(lab).get(name))
    finally:
        stop(host.pid, host)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    require_tools()
    lab = Lab(tmp_path_factory.mktemp("ramdisk-patching"))
    yield lab
    stop_server(lab.server.process)


def test_deploy_without_applied_patches_installs_nothing(lab):
    machine = Machine(lab, "controller-9")
    node, log = machine.deploy()
    assert node["provision_state"] == "active", node["last_error"]
    assert "ramdisk_patches" not in node["driver_internal_info"]
    assert not any("install_patches" in line for line in log), "".join(log)
    with mounted_root(machine.disk, lab.work / "mnt9") as root:
        assert installed(root) == {"hostbase": "1.0-1", "tool": "1.0-1", "kern": "1.0-1"}


def test_deploy_installs_applied_patches_into_the_new_root(lab):
    assert lab.sw_patch("upload", lab.build_patch("RD_0001")).returncode == 0
    applied = lab.sw_patch("apply", "RD_0001")
    assert applied.stdout == "RD_0001 is now in the repo\n\n", applied.stdout + applied.stderr

    machine = Machine(lab, "controller-0")
    node, log = machine.deploy()
    assert node["provision_state"] == "active", node["last_error"]
    done = node["driver_internal_info"]["ramdisk_patches"]
    assert done == {"sw_version": "1.0", "patches": ["RD_0001"],
                    "upgrade": ["kern-1.1-1.noarch", "tool-1.1-1.noarch"],
                    "install": ["ctlonly"]}, done
    with mounted_root(machine.disk, lab.work / "mnt0") as root:
        assert installed(root) == {"hostbase": "1.0-1", "tool": "1.1-1", "kern": "1.1-1",
                                   "ctlonly": "1.0-1"}
        assert not (root / "run/node_is_patched_rr").exists()   # no reboot left to do
        assert not (root / "tmp").exists() and not list(root.glob("metalcast-*"))
        # The deployed host boots and its agent reports: current, no host-install.
        shown = report_from_root(lab, machine.uuid, "controller-0", root)
    assert shown["Patch Current"] == "Yes" and shown["Reboot Required"] == "No", shown
    assert shown["State"] == "idle", shown
    state = [line.split() for line in lab.sw_patch("query").stdout.splitlines()]
    assert ["RD_0001", "Y", "1.0", "Applied"] in state, state


def test_virtual_lab_machine_boots_patch_current(lab, lab_factory, tmp_path):  # noqa: F811 - fixture
    """ipmi + ipxe + direct in the virtual lab: firmware netboots the real agent, which
    writes the image and installs RD_0001 into its ext4 root; the machine then boots
    the deployed disk and reports patch-current with no host-install."""
    require("ipmitool")
    require_image_tools()
    address = mac()
    vlab = lab_factory([{"name": "m1", "mac": address, "disk": str(tmp_path / "m1.img"),
                         "disk_size_mib": DISK_MIB}], pxe=_pxe(lab.server))
    uuid = _enrol(lab.server, vlab.machines["m1"]["bmc_port"], address,
                  deploy_interface="direct", properties={"nodetype": "controller"},
                  instance_info={"image_source": f"{lab.http}/images/root.img",
                                 "image_os_hash_algo": "sha256",
                                 "image_os_hash_value": lab.digest})
    api_call(lab.server.url, "PATCH", f"/v1/nodes/{uuid}",
             [{"op": "replace", "path": "/automated_clean", "value": False}])
    provision(lab.server.url, uuid, "manage", "manageable")
    provision(lab.server.url, uuid, "provide", "available")
    active = provision(lab.server.url, uuid, "active", "active")
    assert active["last_error"] is None, active["last_error"]
    assert active["driver_internal_info"]["ramdisk_patches"]["patches"] == ["RD_0001"]
    booted = vlab.wait("m1", lambda st: st["phase"] == "booted-disk", "booted from disk", 120)
    assert booted["booted_os"]["version_id"] == "1" and booted["boots"] == 2
    agent_log = (tmp_path / "status" / "m1" / "agent.log").read_text()
    assert "patches installed into the new root" in agent_log, agent_log[-2000:]

    api_call(lab.server.url, "PUT", f"/v1/nodes/{uuid}/states/power",
             {"target": "power off"}, ok=(202,))
    vlab.wait("m1", lambda st: st["phase"] == "off", "powered off", 120)
    with mounted_root(tmp_path / "m1.img", tmp_path / "mnt") as root:
        assert installed(root) == {"hostbase": "1.0-1", "tool": "1.1-1", "kern": "1.1-1",
                                   "ctlonly": "1.0-1"}
        shown = report_from_root(lab, uuid, active["name"], root)
    assert (shown["Patch Current"], shown["Reboot Required"]) == ("Yes", "No"), shown
    completion = lab.sw_patch("completion", "hosts").stdout.splitlines()
    assert completion == sorted(["controller-0", active["name"]]), completion


def test_install_failure_fails_the_deploy_with_the_reason(lab):
    machine = Machine(lab, "controller-1", patching_root_partition=7)
    node, _log = machine.deploy()
    assert node["provision_state"] == "deploy failed"
    error = node["last_error"]
    assert "install_patches" in error and "has no partition 7" in error, error
