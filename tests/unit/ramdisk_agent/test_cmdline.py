"""Agent settings: kernel command line parsing and flag overrides."""
from __future__ import annotations

import pytest

from ramdisk_agent.cmdline import bootif_to_mac, load, normalize_mac, parse_kernel_cmdline

CMDLINE = ("BOOT_IMAGE=/vmlinuz console=ttyS0 ipa-api-url=https://10.0.0.1:6385 "
           "BOOTIF=01-52-54-00-AB-CD-EF ipa-insecure=1 ipa-lookup-timeout=30 "
           "metalcast-disk=/dev/vda metalcast-disk=/dev/vdb quiet")


def test_kernel_cmdline():
    values, macs = parse_kernel_cmdline(CMDLINE)
    assert values == {"api_url": "https://10.0.0.1:6385", "insecure": True,
                      "lookup_timeout": 30.0, "disks": ["/dev/vda", "/dev/vdb"]}
    assert macs == ["52:54:00:ab:cd:ef"]


def test_bootif_and_mac_forms():
    assert bootif_to_mac("01-aa-bb-cc-dd-ee-ff") == "aa:bb:cc:dd:ee:ff"
    assert bootif_to_mac("aa-bb-cc-dd-ee-ff") == "aa:bb:cc:dd:ee:ff"
    assert normalize_mac("AA-BB-CC-DD-EE-FF") == "aa:bb:cc:dd:ee:ff"
    for bad in ("aa:bb", "zz:bb:cc:dd:ee:ff", "aabbccddeeff"):
        with pytest.raises(ValueError, match="not a MAC"):
            normalize_mac(bad)


def test_flags_override_cmdline(tmp_path):
    cmdline = tmp_path / "cmdline"
    cmdline.write_text(CMDLINE)
    config, _ = load(["--cmdline-file", str(cmdline), "--api-url", "http://127.0.0.1:1",
                      "--mac", "52:54:00:00:00:01", "--disk", "/tmp/a.img",
                      "--listen", "127.0.0.1:0", "--power-action", "exit"])
    assert config.api_url == "http://127.0.0.1:1"
    assert config.macs == ["52:54:00:00:00:01"]
    assert config.disks == ["/tmp/a.img"]
    assert (config.listen_host, config.listen_port) == ("127.0.0.1", 0)
    assert config.insecure is True and config.lookup_timeout == 30.0   # kept from cmdline
    assert config.power_action == "exit"


def test_no_cmdline_defaults():
    config, _ = load(["--cmdline-file", ""])
    assert config.api_url is None and config.macs == [] and config.listen_port == 9999
    assert config.power_action == "system"


def test_bad_flag_values():
    with pytest.raises(ValueError, match="not a MAC"):
        load(["--cmdline-file", "", "--mac", "nope"])
    with pytest.raises(SystemExit):
        load(["--cmdline-file", "", "--power-action", "explode"])
