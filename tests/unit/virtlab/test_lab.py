"""The virtual lab without processes: its iPXE interpreter running metalcast's real boot
templates, lab.json validation, os-release parsing, the shared BMC state file.

The scripts are rendered by conductor.netboot.render exactly as ``metalcast serve``
writes them; "the network" is a dict from URL to bytes, so every failure mode
(missing node config, missing kernel, a second NIC) is deterministic.
"""
from __future__ import annotations

import pytest

from conductor.netboot import render
from virtlab import images, ipxe
from virtlab.disk import parse_os_release
from virtlab.lab import ConfigError, parse_config
from virtlab.state import StateFile

HTTP = "http://10.0.0.1:8080"
TFTP = "tftp://10.0.0.1:69"
MAC1, MAC2 = "52:54:00:00:00:01", "52:54:00:00:00:02"


class Network:
    """URL -> bytes, recording what was fetched; a missing URL fails like a 404."""

    def __init__(self, files: dict[str, bytes]):
        self.files, self.fetched = files, []

    def __call__(self, url: str) -> bytes:
        self.fetched.append(url)
        if url not in self.files:
            raise ipxe.BootError(f"cannot fetch {url}: HTTP Error 404")
        return self.files[url]


@pytest.fixture
def rendered(tmp_path):
    """boot.ipxe and a node script for MAC2 (the machine's second NIC) only."""
    renderer = render.Renderer(tmp_path / "tftp", tmp_path / "http", HTTP)
    renderer.check_templates()
    renderer.install()
    boot = render.NodeBoot("11111111-2222-3333-4444-555555555555", "n1", (MAC2,), "ipxe",
                           render.Checked(f"{HTTP}/agent/vmlinuz"),
                           render.Checked(f"{HTTP}/agent/initramfs"),
                           (render.Checked("ipa-api-url=http://10.0.0.1:6385"),))
    renderer.write(boot)
    return {f"{TFTP}/boot.ipxe": (tmp_path / "tftp" / "boot.ipxe").read_bytes(),
            f"{HTTP}/ipxe/52-54-00-00-00-02.ipxe":
                (tmp_path / "http" / "ipxe" / "52-54-00-00-00-02.ipxe").read_bytes(),
            f"{HTTP}/agent/vmlinuz": b"K" * 100, f"{HTTP}/agent/initramfs": b"I" * 50}


def test_boot_chains_to_the_second_nic_and_loads_kernel_and_initrd(rendered):
    net = Network(rendered)
    result = ipxe.Script([MAC1, MAC2], fetcher=net, sleep_scale=0).run(f"{TFTP}/boot.ipxe")
    assert result.action == "boot"
    # The booting NIC (net0) has no config: the script walks the NICs, finds net1's.
    assert f"{HTTP}/ipxe/52-54-00-00-00-01.ipxe" in net.fetched
    assert result.scripts == [f"{TFTP}/boot.ipxe", f"{HTTP}/ipxe/52-54-00-00-00-02.ipxe"]
    assert result.kernel.url == f"{HTTP}/agent/vmlinuz" and result.kernel.size == 100
    assert [i.url for i in result.initrds] == [f"{HTTP}/agent/initramfs"]
    words = result.cmdline.split()
    assert "ipa-api-url=http://10.0.0.1:6385" in words and "BOOTIF=01-52-54-00-00-00-02" in words
    assert "initrd=ramdisk" in words


def test_unknown_machine_exits_to_the_next_boot_device(rendered):
    net = Network(rendered)
    result = ipxe.Script([MAC1], fetcher=net, sleep_scale=0).run(f"{TFTP}/boot.ipxe")
    assert result.action == "exit" and result.kernel is None
    assert result.messages == [f"metalcast: no boot configuration for {MAC1}, trying the "
                               "next boot device"]


def test_missing_kernel_retries_then_powers_off(rendered):
    del rendered[f"{HTTP}/agent/vmlinuz"]
    net = Network(rendered)
    result = ipxe.Script([MAC2], fetcher=net, sleep_scale=0).run(f"{TFTP}/boot.ipxe")
    assert result.action == "poweroff"
    assert net.fetched.count(f"{HTTP}/agent/vmlinuz") == render.RETRIES
    assert "powering off" in result.messages[-1]


def _script(text: str) -> ipxe.Script:
    return ipxe.Script([MAC1], fetcher=Network({"tftp://h/s": text.encode()}), sleep_scale=0)


@pytest.mark.parametrize("text, error", [
    ("echo hello\n", "not an iPXE script"),
    ("#!ipxe\nfrobnicate now\n", "unsupported iPXE command 'frobnicate'"),
    ("#!ipxe\n:top\ngoto top\n", "did not finish"),
    ("#!ipxe\ngoto nowhere\n", "no label 'nowhere'"),
    ("#!ipxe\nkernel http://h/missing\n", "failed"),
])
def test_bad_scripts_fail_with_the_reason(text, error):
    with pytest.raises(ipxe.BootError, match=error):
        _script(text).run("tftp://h/s")


def test_variables_and_conditions():
    script = _script("#!ipxe\nset n:int32 -1\ninc n\ninc n 2\nset x ${net${n}/mac}\n"
                     "iseq ${n} 1 && echo one || echo other\nisset ${nothing} || echo unset\n"
                     "echo ${mac:hexhyp}\nexit\n")
    result = script.run("tftp://h/s")
    assert result.action == "exit"
    assert result.messages == ["other", "unset", "52-54-00-00-00-01"]
    assert script.vars["n"] == 2 and script.vars["x"] == ""


def test_os_release_parsing():
    info = parse_os_release('NAME="Lab OS"\n# comment\nVERSION_ID=2\nPRETTY_NAME=\'Lab OS 2\'\n'
                            'BROKEN\nEMPTY=\n')
    assert info == {"NAME": "Lab OS", "VERSION_ID": "2", "PRETTY_NAME": "Lab OS 2", "EMPTY": ""}


@pytest.mark.parametrize("config, error", [
    ({}, "status_dir"),
    ({"status_dir": "/s"}, "state_dir"),
    ({"status_dir": "/s", "bmc": {"state_dir": "/b"}}, "no 'machines'"),
    ({"status_dir": "/s", "bmc": {"state_dir": "/b"},
      "machines": [{"name": "a", "mac": "nope", "disk": "/d"}]}, "not a MAC"),
    ({"status_dir": "/s", "bmc": {"state_dir": "/b"},
      "machines": [{"name": "a", "mac": MAC1, "disk": "/d"},
                   {"name": "a", "mac": MAC2, "disk": "/e"}]}, "unique"),
    ({"status_dir": "/s", "bmc": {"state_dir": "/b"},
      "machines": [{"name": "a", "mac": MAC1, "disk": "/d"},
                   {"name": "b", "mac": MAC1.upper(), "disk": "/e"}]}, "MACs must be unique"),
    ({"status_dir": "/s", "bmc": {"state_dir": "/b"},
      "machines": [{"name": "a", "mac": MAC1}]}, "disk"),
    ({"status_dir": "/s", "bmc": {"state_dir": "/b"}, "pxe": {"tftp": "h:69", "bogus": 1},
      "machines": [{"name": "a", "mac": MAC1, "disk": "/d"}]}, "bogus"),
    ({"status_dir": "/s", "bmc": {"state_dir": "/b"}, "agent_command": "metalcast-agent",
      "machines": [{"name": "a", "mac": MAC1, "disk": "/d"}]}, "agent_command"),
])
def test_bad_lab_config_is_refused_with_the_reason(config, error):
    with pytest.raises(ConfigError, match=error):
        parse_config(config)


def test_state_file_sees_the_other_writer(tmp_path):
    """The BMC and the lab's firmware share bmc-<port>.json (virtlab.state)."""
    bmc, lab = StateFile(tmp_path / "bmc-1.json"), StateFile(tmp_path / "bmc-1.json")
    current = bmc.load()
    assert bmc.refresh(current) is current                  # unchanged: no re-read

    def power_on(state):
        state.power, state.boots = "on", state.boots + 1
    lab.update(power_on)
    seen = bmc.refresh(current)
    assert seen.power == "on" and seen.boots == 1 and seen.uuid == current.uuid
    assert bmc.refresh(seen) is seen


def test_image_builder_refuses_bad_input(tmp_path):
    with pytest.raises(images.ImageError, match="at least"):
        images.build_image(tmp_path / "x.img", "1", size_mib=8)
    assert not (tmp_path / "x.img").exists()
