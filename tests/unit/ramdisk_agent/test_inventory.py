"""Inventory: disk image files as disks, and this machine's /proc and /sys."""
from __future__ import annotations

import pytest

from ramdisk_agent import inventory


def test_disk_image_file_spec(tmp_path):
    disk = tmp_path / "node.img"
    disk.write_bytes(b"\0" * 65536)
    plain = inventory.describe_disk_spec(str(disk))
    assert plain.name == str(disk) and plain.size == 65536
    assert plain.model == inventory.VIRTUAL_MODEL and len(plain.serial) == 16
    assert plain.serial == inventory.describe_disk_spec(str(disk)).serial   # stable
    tagged = inventory.describe_disk_spec(f"{disk},serial=S1,wwn=0x50,model=M,rotational=1")
    assert (tagged.serial, tagged.wwn, tagged.model, tagged.rotational) == ("S1", "0x50", "M", True)


def test_disk_spec_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        inventory.describe_disk_spec(str(tmp_path / "missing.img"))
    disk = tmp_path / "node.img"
    disk.write_bytes(b"\0" * 512)
    with pytest.raises(ValueError, match="unknown disk properties"):
        inventory.describe_disk_spec(f"{disk},colour=red")


def test_disk_specs_replace_sys_block(tmp_path):
    disk = tmp_path / "node.img"
    disk.write_bytes(b"\0" * 512)
    assert [d.name for d in inventory.list_disks([str(disk)])] == [str(disk)]


def test_collect_shape(tmp_path):
    disk = tmp_path / "node.img"
    disk.write_bytes(b"\0" * 512)
    inv = inventory.collect([str(disk)], "52:54:00:00:00:01")
    assert set(inv) == {"cpu", "memory", "disks", "interfaces", "system_vendor", "boot"}
    assert inv["cpu"]["count"] >= 1 and inv["memory"]["total"] > 0
    assert inv["disks"][0]["size"] == 512
    assert inv["boot"]["current_boot_mode"] in ("bios", "uefi")
    for nic in inv["interfaces"]:
        assert nic["name"] != "lo" and nic["mac_address"].count(":") == 5
