"""The PXE lab's pure parts: the console stamping, the boot timeline and the
initramfs packer (the real boot is tests/functional/test_pxe_boot.py)."""
from __future__ import annotations

import gzip
import io
import os
import time

import pytest

from virtlab.guest import NET_MODULES, Kernel
from virtlab.initramfs import NewcWriter, build_lookup_initramfs, lookup_init
from virtlab.netlab import TimedLog
from virtlab.pxeboot import BootedVM, boot_timeline, fetched_urls


def _feed(chunks: list[tuple[float, bytes]]) -> tuple[TimedLog, float]:
    """A TimedLog reading a pipe that gets ``chunks`` after the given pauses."""
    read, write = os.pipe()
    log = TimedLog(os.fdopen(read, "rb"))
    started = time.monotonic()
    for pause, data in chunks:
        time.sleep(pause)
        os.write(write, data)
    os.close(write)
    log._thread.join(5)
    return log, started


def test_console_lines_are_stamped_when_their_text_arrived():
    log, started = _feed([
        (0, b"\x1b[2J\x1b[01;01HiPXE initialising devices...ok\r\n"),
        (0, b"http://10.77.0.1:8080/vmlinuz... ok\r\nhttp://10.77.0.1:8080/initrd.img... o"),
        # the kernel reset the UART ("k" lost, no newline); /init speaks 0.4 s later
        (0.4, b"METALCAST-GUEST init uptime=2.1\n"),
    ])
    assert [text for _, text in log.lines] == [
        "iPXE initialising devices...ok",
        "http://10.77.0.1:8080/vmlinuz... ok",
        "http://10.77.0.1:8080/initrd.img... oMETALCAST-GUEST init uptime=2.1"]
    initrd_at, _ = log.first(r"initrd\.img\.\.\. o")
    init_at, _ = log.first(r"METALCAST-GUEST init")
    assert initrd_at - started < 0.3 <= init_at - started
    assert log.first("no such text") is None


def test_boot_timeline_names_the_downloads_in_order():
    log, started = _feed([(0, b"net0: 52:54:00:00:00:01 using virtio-net on 0000:00:03.0 (open)\n"
                              b"Configuring (net0 52:54:00:00:00:01)...... ok\n"
                              b"tftp://10.77.0.1/boot.ipxe... ok\n"
                              b"http://10.77.0.1:8080/ipxe/52-54-00-00-00-01.ipxe... ok\n"
                              b"http://10.77.0.1:8080/images/deploy_kernel... ok\n"
                              b"http://10.77.0.1:8080/images/deploy_ramdisk... o"),
                         (0.2, b"METALCAST-GUEST lookup status=200 mac=52:54:00:00:00:01 x\n")])
    vm = BootedVM(process=None, console=log, started=started, mac="52:54:00:00:00:01")
    stages = boot_timeline(vm)
    assert set(stages) == {"dhcp_start", "dhcp_done", "boot_file", "node_script",
                           "kernel_fetched", "initrd_fetched", "lookup_answered"}
    assert stages["initrd_fetched"] < 0.15 <= stages["lookup_answered"]
    assert vm.lookup() == ("200", "52:54:00:00:00:01")
    assert fetched_urls(vm)[1:] == ["http://10.77.0.1:8080/ipxe/52-54-00-00-00-01.ipxe",
                                    "http://10.77.0.1:8080/images/deploy_kernel",
                                    "http://10.77.0.1:8080/images/deploy_ramdisk"]


def test_failed_download_is_not_a_fetch():
    log, started = _feed([(0, b"http://10.77.0.1:8080/images/k... Operation canceled\n"
                              b"http://10.77.0.1:8080/images/k... No such file or directory\n")])
    assert fetched_urls(BootedVM(None, log, started, "")) == []


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


def test_escape_sequences_cut_between_chunks_are_stripped():
    log, _ = _feed([(0, b"\x1bc\x1b"), (0.05, b"[?7l\x1b[2J\x1b["),
                    (0.05, b"0mSeaBIOS (version 1.16)\r\n")])
    assert [text for _, text in log.lines] == ["SeaBIOS (version 1.16)"]


def test_boot_timeline_without_a_node_script():
    log, started = _feed([(0, b"tftp://10.77.0.1/boot.ipxe... ok\n"
                              b"http://10.77.0.1:8080/vmlinuz... ok\n"
                              b"http://10.77.0.1:8080/initrd.img... ok\n")])
    stages = boot_timeline(BootedVM(None, log, started, ""))
    assert set(stages) == {"boot_file", "kernel_fetched", "initrd_fetched"}
