"""TFTP request rules: path confinement, option negotiation, request decoding."""
from __future__ import annotations

import os
import struct

import pytest

from conductor import errors
from conductor.netboot import tftp_request as req


def rrq(name: bytes, mode: bytes = b"octet", *options: bytes, opcode: int = 1) -> bytes:
    return struct.pack("!H", opcode) + b"\0".join((name, mode, *options)) + b"\0"


def refused(call, *args) -> errors.TftpRefusal:
    with pytest.raises(errors.TftpRefusal) as info:
        call(*args)
    return info.value


# -- names ------------------------------------------------------------------------

@pytest.mark.parametrize("name, expected", [
    ("pxelinux.0", "pxelinux.0"),
    ("/pxelinux.0", "pxelinux.0"),           # PXE firmware asks for "/file"
    ("//boot/./grub//grub.cfg", "boot/grub/grub.cfg"),
    ("/etc/passwd", "etc/passwd"),          # root-relative, never the host's file
    ("pxelinux.cfg/01-aa-bb-cc-dd-ee-ff", "pxelinux.cfg/01-aa-bb-cc-dd-ee-ff"),
])
def test_names_become_root_relative(name, expected):
    assert req.relative_name(name) == expected


@pytest.mark.parametrize("name", [
    "..", "../etc/passwd", "/../etc/passwd", "boot/../../x", "boot/..", "a/../b",
    "", "/", ".", "a\0b", "x" * (req.MAX_PATH + 1),
])
def test_bad_names_are_access_violations(name):
    assert refused(req.relative_name, name).tftp_code == req.ACCESS_VIOLATION


# -- confinement --------------------------------------------------------------------

@pytest.fixture
def root(tmp_path):
    top = tmp_path / "root"
    (top / "boot").mkdir(parents=True)
    (top / "boot" / "vmlinuz").write_bytes(b"kernel" * 100)
    (tmp_path / "secret").write_text("outside")
    (top / "out").symlink_to(tmp_path / "secret")
    (top / "outdir").symlink_to(tmp_path)
    (top / "in").symlink_to("boot/vmlinuz")
    (top / "dangling").symlink_to(tmp_path / "missing")
    os.mkfifo(top / "fifo")
    return top


def test_regular_file_is_opened(root):
    fd, size = req.confine(root, "boot/vmlinuz")
    try:
        assert size == 600 and os.read(fd, 6) == b"kernel"
    finally:
        os.close(fd)


def test_symlink_inside_root_is_followed(root):
    fd, size = req.confine(root, "in")
    os.close(fd)
    assert size == 600


def test_root_given_through_a_symlink_still_works(root, tmp_path):
    (tmp_path / "alias").symlink_to(root)
    fd, size = req.confine(tmp_path / "alias", "boot/vmlinuz")
    try:
        assert size == 600 and os.read(fd, 6) == b"kernel"
    finally:
        os.close(fd)


@pytest.mark.parametrize("name", ["out", "outdir/secret", "dangling", "boot", "fifo"])
def test_escapes_and_non_regular_files_are_refused(root, name):
    assert refused(req.confine, root, name).tftp_code == req.ACCESS_VIOLATION


def test_missing_file_is_not_found(root):
    assert refused(req.confine, root, "boot/initrd").tftp_code == req.FILE_NOT_FOUND


# -- options ----------------------------------------------------------------------

@pytest.mark.parametrize("options, blksize, oack", [
    ({}, 512, {}),
    ({"blksize": "1468"}, 1468, {"blksize": "1468"}),
    ({"blksize": "65464"}, 65464, {"blksize": "65464"}),
    ({"blksize": "65535"}, 65464, {"blksize": "65464"}),       # clamped (RFC 2348)
    ({"blksize": "9" * 19}, 65464, {"blksize": "65464"}),
    ({"blksize": "7"}, 512, {}),                                # below 8: ignored
    ({"blksize": "9" * 400}, 512, {}),                          # garbage: ignored
    ({"blksize": "-1"}, 512, {}),
    ({"blksize": " 1024"}, 512, {}),
    ({"blksize": "0x400"}, 512, {}),
    ({"blksize": "\u0661\u0662"}, 512, {}),                     # non-ASCII digits
    ({"windowsize": "4", "multicast": ""}, 512, {}),            # unknown: ignored
])
def test_blksize_bounds(options, blksize, oack):
    result = req.negotiate(options, 1000)
    assert (result.blksize, result.oack) == (blksize, oack)


@pytest.mark.parametrize("value, timeout", [
    ("1", 1.0), ("5", 5.0), ("6", None), ("255", None), ("0", None), ("256", None),
    ("x", None), ("", None)])
def test_timeout_bounds(value, timeout):
    """Honoured up to TftpLimits.max_timeout (5 s); above it the option is left out of
    the OACK (RFC 2349: the OACK must repeat the client's value) and the server's own
    retransmission timeout applies, so a silent client cannot hold a transfer for minutes."""
    result = req.negotiate({"timeout": value}, 10)
    assert result.timeout == timeout
    assert result.oack.get("timeout") == (value if timeout is not None else None)


def test_timeout_ceiling_is_the_callers():
    assert req.negotiate({"timeout": "30"}, 10, max_timeout=30).oack == {"timeout": "30"}
    assert req.negotiate({"timeout": "2"}, 10, max_timeout=1).oack == {}


def test_tsize_answers_the_real_size():
    assert req.negotiate({"tsize": "0"}, 123456).oack == {"tsize": "123456"}
    assert req.negotiate({"tsize": "junk"}, 123456).oack == {}


# -- request decoding ----------------------------------------------------------------

def test_rrq_with_options_is_decoded_case_insensitively():
    request = req.parse_request(rrq(b"/pxelinux.0", b"OCTET", b"BlkSize", b"1468",
                                    b"tsize", b"0"))
    assert (request.opcode, request.filename, request.mode) == (1, "/pxelinux.0", "octet")
    assert request.options == {"blksize": "1468", "tsize": "0"}


def test_wrq_is_decoded_as_wrq():
    assert req.parse_request(rrq(b"upload", opcode=2)).opcode == req.OPCODE_WRQ


@pytest.mark.parametrize("datagram", [
    b"", b"\0", b"\0\1", b"\0\1abc",                       # short / no terminators
    rrq(b"f", b"octet", b"blksize"),                       # odd option count
    rrq(b"f\xff\xfe", b"octet"),                           # non-ASCII name
    rrq(b"f", b"octet", b"blksize", b"\xff"),              # non-ASCII value
    b"\0\3\0\1data", b"\0\4\0\0", b"\1\1f\0octet\0",       # not a request
])
def test_malformed_requests_are_illegal_operations(datagram):
    assert refused(req.parse_request, datagram).tftp_code == req.ILLEGAL_OPERATION


def test_packets_are_encoded_on_the_wire_format():
    assert req.error_packet(2, "Access violation") == b"\0\5\0\2Access violation\0"
    oack = req.oack_packet({"blksize": "1468", "tsize": "10"})
    assert oack[:2] == b"\0\6"
    assert set(oack[2:].split(b"\0")[:-1]) == {b"blksize", b"1468", b"tsize", b"10"}


def test_netascii_conversion():
    assert req.to_netascii(b"a\nb\rc\r\n") == b"a\r\nb\r\0c\r\0\r\n"
