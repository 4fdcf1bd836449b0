"""The PXE lab's initramfs packer (the console reader and boot timeline:
tests/integration/virtlab/test_pxeboot.py; the real boot: tests/functional/test_pxe_boot.py)."""
from __future__ import annotations

import gzip
import io

import pytest

from virtlab.guest import NET_MODULES, Kernel
from virtlab.initramfs import NewcWriter, build_lookup_initramfs, lookup_init


def _read_newc(data: bytes) -> dict[str, tuple[int, bytes]]:
    """name -> (mode, data): an independent reader of the newc format."""
    entries, offset = {}, 0
    while True:
        assert data[offset:offset + 6] == b"070701"
        fields = [int(data[offset + 6 + 8 * i:offset + 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = fields[1], fields[6], fields[11]
        name_start = offset + 110
        name = data[name_start:name_start + namesize - 1].decode()
        body_start = name_start + namesize + (-(110 + namesize) % 4)
        if name == "TRAILER!!!":
            return entries
        entries[name] = (mode, data[body_start:body_start + size])
        offset = body_start + size + (-size % 4)


@pytest.fixture
def fake_kernel(tmp_path) -> Kernel:
    modules = tmp_path / "modules"
    modules.mkdir()
    for name in NET_MODULES:
        (modules / f"{name}.ko").write_bytes(f"ko:{name}".encode())
    return Kernel(abi="test", vmlinuz=tmp_path / "vmlinuz",
                  modules=tuple(modules / f"{name}.ko" for name in NET_MODULES))


def test_initramfs_holds_busybox_modules_and_init(tmp_path, fake_kernel):
    busybox = tmp_path / "busybox"
    busybox.write_bytes(b"\x7fELF fake busybox")
    busybox.chmod(0o755)
    out = build_lookup_initramfs(fake_kernel, tmp_path / "out" / "initrd.gz", str(busybox))
    entries = _read_newc(gzip.decompress(out.read_bytes()))
    assert entries["bin/busybox"] == (0o100755, b"\x7fELF fake busybox")
    assert entries["bin/sh"] == (0o120777, b"busybox")
    assert entries["dev/console"][0] == 0o20600
    for name in NET_MODULES:
        assert entries[f"lib/modules/{name}.ko"][1] == f"ko:{name}".encode()
    init = entries["init"][1].decode()
    assert entries["init"][0] == 0o100755 and init.startswith("#!/bin/sh")
    assert "for module in failover net_failover virtio_ring virtio virtio_pci_modern_dev" in init
    assert "X-OpenStack-Ironic-API-Version: 1.62" in init and "poweroff -f" in init
    assert not list(out.parent.glob("*.partial"))


def test_initramfs_names_the_missing_busybox_package(tmp_path, fake_kernel):
    with pytest.raises(RuntimeError, match="busybox-static"):
        build_lookup_initramfs(fake_kernel, tmp_path / "x.gz", str(tmp_path / "nope"))


def test_lookup_init_loads_modules_in_dependency_order(fake_kernel):
    script = lookup_init(fake_kernel)
    order = script.split("for module in ", 1)[1].split(";", 1)[0].split()
    assert order == list(NET_MODULES)
    assert order.index("virtio_ring") < order.index("virtio_pci") < order.index("virtio_net")
    assert order.index("failover") < order.index("net_failover") < order.index("virtio_net")


def test_newc_pads_names_and_data_to_four_bytes():
    raw = io.BytesIO()
    writer = NewcWriter(raw)
    writer.file("a", b"xyz")
    writer.close()
    assert len(raw.getvalue()) % 4 == 0
    assert _read_newc(raw.getvalue())["a"] == (0o100644, b"xyz")


