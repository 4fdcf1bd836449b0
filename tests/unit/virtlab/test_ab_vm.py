"""The QEMU A/B host's pieces that need no VM (the VM itself:
tests/functional/test_qemu_ab_update.py)."""
from __future__ import annotations

import lzma

import pytest

from ramdisk_agent.host.update import config as update_config
from virtlab.ab_vm import pvh_kernel, update_conf, vm_init
from virtlab.guest import BLOCK_MODULES, FS_MODULES, NET_MODULES, Kernel


@pytest.fixture
def fake_kernel(tmp_path) -> Kernel:
    def modules(names):
        return tuple(tmp_path / f"{name}.ko" for name in names)
    return Kernel(abi="test", vmlinuz=tmp_path / "vmlinuz", modules=modules(NET_MODULES),
                  block_modules=modules(BLOCK_MODULES), fs_modules=modules(FS_MODULES))


def test_update_conf_reads_back_through_the_engines_parser():
    """The file the VM gets means what the test intends, as the agent reads it (a
    quoted ``sh -c '...'`` once lost its quotes here and the reboot never happened)."""
    text = update_conf("http://10.77.0.1:6385/v1/update/", "lab", health_window=7)
    config = update_config.build(update_config.parse_lines(text, "update.conf"))
    assert (config.server, config.group, config.reboot_strategy) == (
        "http://10.77.0.1:6385/v1/update/", "lab", "reboot")
    assert config.reboot_command == ("reboot", "-f")
    assert config.health_commands == ("test ! -e /sysroot/etc/metalcast-lab-broken",)
    assert config.health_window == 7 and config.health_needs_appliance is True
    assert (config.disk, config.slot_labels) == ("/dev/vda", ("USR-A", "USR-B"))
    assert config.os_release_file == "/sysroot/etc/os-release"
    assert config.state_dir.startswith("/state/") and config.wall_delay == 0
    assert config.schedule.first_delay == 1


def test_init_loads_every_module_in_dependency_order(fake_kernel):
    script = vm_init(fake_kernel, "10.77.0.9/24")
    assert f"for module in {' '.join(NET_MODULES + BLOCK_MODULES + FS_MODULES)}; do" in script
    assert "ip addr add 10.77.0.9/24 dev eth0" in script
    assert "@" not in script.replace("$@", "")


def test_pvh_kernel_is_the_elf_inside_the_xz_stream(fake_kernel):
    elf = b"\x7fELF" + bytes(range(256)) * 64
    packed = lzma.compress(elf, format=lzma.FORMAT_XZ)
    # a bzImage: setup code, a false magic with garbage after it, the real stream, a tail
    fake_kernel.vmlinuz.write_bytes(b"MZ" + bytes(600) + b"\xfd7zXZ\x00junk" + packed
                                    + b"tail")
    assert pvh_kernel(fake_kernel).read_bytes() == elf
    assert pvh_kernel(fake_kernel) == fake_kernel.vmlinuz.with_name("vmlinux")  # cached


def test_pvh_kernel_refuses_an_image_without_a_kernel(fake_kernel):
    fake_kernel.vmlinuz.write_bytes(b"MZ" + lzma.compress(b"not an elf",
                                                          format=lzma.FORMAT_XZ))
    with pytest.raises(RuntimeError, match="no XZ-compressed ELF kernel"):
        pvh_kernel(fake_kernel)
    assert not fake_kernel.vmlinuz.with_name("vmlinux").exists()
