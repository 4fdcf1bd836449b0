"""Root device hints, matched like Ironic."""
from __future__ import annotations

import pytest

from ramdisk_agent.errors import DeviceNotFound, InvalidContent
from ramdisk_agent.inventory import Disk
from ramdisk_agent.ramdisk.hints import select_root_disk

GIB = 1 << 30
DISKS = [
    Disk("/dev/sda", 500 * GIB, model="Big HDD", serial="S-A", wwn="0x5000a", rotational=True),
    Disk("/dev/sdb", 120 * GIB, model="Fast SSD", serial="S-B", wwn="0x5000b"),
    Disk("/dev/nvme0n1", 60 * GIB, model="NVMe", serial="S-C", vendor="ACME"),
    Disk("/dev/sdc", 2 * GIB, model="USB stick", serial="S-D", rotational=False),
]


@pytest.mark.parametrize("hints,expected", [
    ({"size": 120}, "/dev/sdb"),
    ({"size": "120"}, "/dev/sdb"),
    ({"size": ">= 200"}, "/dev/sda"),
    ({"size": "< 100", "rotational": False, "model": "nvme"}, "/dev/nvme0n1"),
    ({"serial": "s-b"}, "/dev/sdb"),
    ({"wwn": "s== 0x5000A"}, "/dev/sda"),
    ({"name": "/dev/nvme0n1"}, "/dev/nvme0n1"),
    ({"name": "sdc"}, "/dev/sdc"),
    ({"rotational": "true"}, "/dev/sda"),
    ({"vendor": "ACME"}, "/dev/nvme0n1"),
    ({"size": "!= 500"}, "/dev/sdb"),
])
def test_hints_select(hints, expected):
    assert select_root_disk(DISKS, hints).name == expected


def test_default_is_smallest_disk_of_4gib_or_more():
    assert select_root_disk(DISKS, None).name == "/dev/nvme0n1"
    assert select_root_disk(DISKS[3:], {}).name == "/dev/sdc"


def test_no_match_and_bad_hints():
    with pytest.raises(DeviceNotFound, match="No disk matches"):
        select_root_disk(DISKS, {"serial": "nope"})
    with pytest.raises(DeviceNotFound, match="No disk found"):
        select_root_disk([], None)
    with pytest.raises(InvalidContent, match="Unsupported root device hint 'hctl'"):
        select_root_disk(DISKS, {"hctl": "0:0:0:0"})
    with pytest.raises(InvalidContent, match="size"):
        select_root_disk(DISKS, {"size": ">= big"})
    with pytest.raises(InvalidContent, match="rotational"):
        select_root_disk(DISKS, {"rotational": "maybe"})
