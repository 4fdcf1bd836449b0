"""metalcast's TFTP server against real clients: curl, tftp-hpa's tftp, busybox tftp.

The server runs in the test process on 127.0.0.1 (port 0); every download is
compared byte for byte with its source. Bad requests must get the proper TFTP
error and leave the server serving.
"""
from __future__ import annotations

import filecmp
import os
import socket
import struct
import subprocess
from pathlib import Path

import pytest

from conductor.netboot.tftp import TftpServer
from tests.functional.tools import require

#: curl exit codes for TFTP errors (man curl, EXIT CODES).
CURL_NOT_FOUND, CURL_PERMISSION = 68, 69
MAC_CONFIG = "pxelinux.cfg/01-52-54-00-12-34-56"


def run(*cmd: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([require(cmd[0]), *cmd[1:]], capture_output=True, text=True,
                          timeout=timeout)


def curl(port: int, name: str, out: Path, blksize: int | None = None) -> int:
    options = ["--tftp-blksize", str(blksize)] if blksize else []
    return run("curl", "-s", "--path-as-is", *options, "-o", str(out),
               f"tftp://127.0.0.1:{port}/{name}").returncode


def tftp_hpa(port: int, command: str) -> str:
    result = run("tftp", "-m", "binary", "127.0.0.1", str(port), "-c", *command.split())
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    top = tmp_path_factory.mktemp("tftproot")
    outside = tmp_path_factory.mktemp("outside")
    (outside / "secret").write_text("not for TFTP clients\n")
    (top / "boot").mkdir()
    (top / "boot" / "vmlinuz").write_bytes(os.urandom(3 * 1024 * 1024 + 123))
    (top / "small.cfg").write_bytes(b"default menu\n")
    (top / "escape").symlink_to(outside / "secret")
    (top / "alias").symlink_to("boot/vmlinuz")
    # 34 MiB at 512-byte blocks is 69632 blocks: the block number wraps past 65535.
    with open(top / "big.img", "wb") as big:
        big.truncate(34 * 1024 * 1024)
        big.seek(12345)
        big.write(os.urandom(1 << 20))
        big.seek(-(1 << 20), os.SEEK_END)
        big.write(os.urandom(1 << 20))
    return top


@pytest.fixture(scope="module")
def server(root):
    configs = {MAC_CONFIG: b"default deploy\nlabel deploy\n  kernel boot/vmlinuz\n"}
    srv = TftpServer(root, port=0, resolver=lambda name, client: configs.get(name))
    srv.start()
    yield srv
    srv.stop()


@pytest.mark.parametrize("blksize", [512, 1468, 8192, 65464])
def test_curl_block_sizes(server, root, tmp_path, blksize):
    out = tmp_path / "vmlinuz"
    assert curl(server.port, "boot/vmlinuz", out, blksize) == 0
    assert filecmp.cmp(out, root / "boot" / "vmlinuz", shallow=False)


def test_tftp_hpa_client_plain_512_byte_blocks(server, root, tmp_path):
    out = tmp_path / "vmlinuz"
    tftp_hpa(server.port, f"get /boot/vmlinuz {out}")   # leading "/" as PXE sends it
    assert filecmp.cmp(out, root / "boot" / "vmlinuz", shallow=False)


def test_busybox_client_largest_blocks(server, root, tmp_path):
    out = tmp_path / "vmlinuz"
    result = run("busybox", "tftp", "-b", "65464", "-g", "-r", "alias", "-l", str(out),
                 "127.0.0.1", str(server.port))
    assert result.returncode == 0, result.stderr
    assert filecmp.cmp(out, root / "boot" / "vmlinuz", shallow=False)


def test_block_number_rollover(server, root, tmp_path):
    out = tmp_path / "big.img"
    assert curl(server.port, "big.img", out, 512) == 0
    assert filecmp.cmp(out, root / "big.img", shallow=False)


def test_twenty_concurrent_clients(server, root, tmp_path):
    """Twenty machines at once, each from its own address (127.0.0.10-29): one address
    may hold only a few transfers (TftpLimits.per_client)."""
    outs = [tmp_path / f"c{i}" for i in range(20)]
    procs = [subprocess.Popen([require("curl"), "-s", "--interface", f"127.0.0.{10 + i}",
                               "--tftp-blksize", "1468", "-o", str(out),
                               f"tftp://127.0.0.1:{server.port}/boot/vmlinuz"])
             for i, out in enumerate(outs)]
    assert [proc.wait(timeout=120) for proc in procs] == [0] * 20
    assert all(filecmp.cmp(out, root / "boot" / "vmlinuz", shallow=False) for out in outs)


def test_a_storm_of_thirty_real_clients_at_once(server, root, tmp_path):
    """A rack powering on: 30 clients start together, spread over the worker
    processes: curl at 512 and 1468-byte blocks from their own addresses
    (127.0.0.40-65), and two busybox (1468) and two tftp-hpa (no options), which
    cannot choose their source, from 127.0.0.1: exactly the per-client limit.
    Every file must arrive intact."""
    assert server.limits.per_client == 4
    url = f"tftp://127.0.0.1:{server.port}/boot/vmlinuz"
    commands = []
    for i in range(26):
        commands.append([require("curl"), "-s", "--interface", f"127.0.0.{40 + i}",
                         "--tftp-blksize", ("512", "1468")[i % 2],
                         "-o", str(tmp_path / f"s{i}"), url])
    for i in (26, 27):
        commands.append([require("busybox"), "tftp", "-b", "1468", "-g", "-r",
                         "boot/vmlinuz", "-l", str(tmp_path / f"s{i}"), "127.0.0.1",
                         str(server.port)])
    for i in (28, 29):
        commands.append([require("tftp"), "-m", "binary", "127.0.0.1",
                         str(server.port), "-c", "get", "boot/vmlinuz",
                         str(tmp_path / f"s{i}")])
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for cmd in commands]
    results = [(proc.wait(timeout=180), proc.stdout.read()) for proc in procs]
    assert [code for code, _ in results] == [0] * 30, results
    assert all(filecmp.cmp(tmp_path / f"s{i}", root / "boot" / "vmlinuz", shallow=False)
               for i in range(30))


def test_dynamic_per_mac_file(server, tmp_path):
    out = tmp_path / "cfg"
    assert curl(server.port, MAC_CONFIG, out) == 0
    assert out.read_bytes().startswith(b"default deploy")
    unknown = "pxelinux.cfg/01-52-54-00-99-99-99"
    assert curl(server.port, unknown, tmp_path / "none") == CURL_NOT_FOUND


def raw_request(port: int, datagram: bytes) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.sendto(datagram, ("127.0.0.1", port))
        reply, peer = sock.recvfrom(70000)
        if reply[:2] in (b"\0\3", b"\0\6"):   # a transfer started: cancel it politely
            sock.sendto(b"\0\5\0\0done\0", peer)
        return reply


def rrq(name: bytes, *options: bytes) -> bytes:
    return b"\0\1" + b"".join(f + b"\0" for f in (name, b"octet", *options))


def test_tsize_reports_the_file_size(server, root):
    reply = raw_request(server.port, rrq(b"boot/vmlinuz", b"tsize", b"0"))
    size = (root / "boot" / "vmlinuz").stat().st_size
    assert reply == b"\0\6tsize\0" + str(size).encode() + b"\0"


@pytest.mark.parametrize("options, expected", [
    ((b"blksize", b"9" * 30), b"\0\3\0\1"),              # oversized value: ignored
    ((b"blksize", b"100000"), b"\0\6blksize\x0065464\0"),  # clamped (RFC 2348)
    ((b"blksize", b"1" * 60000), b"\0\3\0\1"),           # 60 kB value: ignored
    ((b"timeout", b"0", b"blksize", b"2"), b"\0\3\0\1"),  # out of range: ignored
    ((b"blksize",), b"\0\5\0\4"),                        # odd option list: error 4
    ((b"blksize", b"\xff\xfe"), b"\0\5\0\4"),            # not ASCII: error 4
])
def test_garbage_options_from_a_raw_socket(server, root, tmp_path, options, expected):
    assert raw_request(server.port, rrq(b"small.cfg", *options)).startswith(expected)
    assert curl(server.port, "small.cfg", tmp_path / "ok") == 0


@pytest.mark.parametrize("name, code", [
    ("../outside/secret", CURL_PERMISSION),
    ("boot/../../outside/secret", CURL_PERMISSION),
    ("escape", CURL_PERMISSION),          # symlink pointing out of the root
    ("boot", CURL_PERMISSION),            # a directory
    ("missing.efi", CURL_NOT_FOUND),
])
def test_bad_names_are_refused_and_the_server_keeps_serving(server, tmp_path, name, code):
    out = tmp_path / "out"
    assert curl(server.port, name, out) == code
    assert not out.exists() or out.stat().st_size == 0
    assert curl(server.port, "small.cfg", tmp_path / "ok") == 0


def test_absolute_path_stays_inside_the_root(server, tmp_path):
    out = tmp_path / "passwd"
    assert "File not found" in tftp_hpa(server.port, f"get /etc/passwd {out}")
    assert not out.exists() or out.read_bytes() == b""


def test_write_request_is_an_access_violation(server, root, tmp_path):
    upload = tmp_path / "upload"
    upload.write_bytes(b"data")
    assert "Access violation" in tftp_hpa(server.port, f"put {upload} uploaded")
    assert not (root / "uploaded").exists()
    assert raw_request(server.port, b"\0\2x\0octet\0") == struct.pack(
        "!HH", 5, 2) + b"Access violation\0"


def test_netascii_mode_round_trips_through_tftp_hpa(server, root, tmp_path):
    (root / "notes.txt").write_bytes(b"line one\nline two\r\nbare\rcr\n" * 200)
    out = tmp_path / "notes.txt"
    result = run("tftp", "-m", "netascii", "127.0.0.1", str(server.port), "-c", "get",
                 "notes.txt", str(out))
    assert out.read_bytes() == (root / "notes.txt").read_bytes(), result.stdout
