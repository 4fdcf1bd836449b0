"""The PXE lab's console reader (virtlab.netlab.TimedLog) on a real pipe read by its
thread: lines are stamped when their text arrived, escapes cut between chunks are
stripped, and the boot timeline and fetched URLs come from those stamps. The pauses
between writes are the behaviour under test (arrival times), not waits. The initramfs
packer: tests/unit/virtlab/test_initramfs.py; the real boot: tests/functional/test_pxe_boot.py."""
from __future__ import annotations

import os
import time

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
