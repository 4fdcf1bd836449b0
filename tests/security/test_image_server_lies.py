"""A hostile or broken image server against the agent's raw image writer.

The agent reads a plain HTTP body straight from the socket (``download._SocketBody``)
instead of through ``http.client``; these replays check that the bounds
``http.client`` used to give still hold on that path, end to end through
``write_image`` onto a disk file:

* a body longer than its ``Content-Length`` (bytes meant to land past the image, over
  whatever follows it on the disk) is cut at the announced length;
* an endless body, close-delimited or chunked, stops at the disk's end with "does not
  fit": the target (a file here) does not grow, and the first MiB is zeroed;
* a resume answered from another offset than asked (splicing other bytes into the
  image) is refused, and the first MiB is zeroed.

Loopback only; each server sends a bounded amount and every socket has a timeout.
"""
from __future__ import annotations

import hashlib
import os

import pytest

from ramdisk_agent.errors import ImageDownloadError, ImageWriteError
from ramdisk_agent.ramdisk.download import DownloadOptions
from ramdisk_agent.ramdisk.imagewrite import ImageSpec, write_image
from tests.scripted_http import ScriptedServer, head, send_pieces

MIB = 1 << 20
IMAGE = os.urandom(5 * MIB + 4321)
DISK = 8 * MIB
FAST = DownloadOptions(retry_delay=0.01, timeout=10, retries=1)
ODD = (7, 65537, 1 << 20, 4093)
FLOOD = 64 * MIB          # what an "endless" body sends at most


def spec(url: str, data: bytes = IMAGE) -> ImageSpec:
    return ImageSpec.from_image_info({"urls": [url + "/image.raw"], "disk_format": "raw",
                                      "os_hash_algo": "sha256",
                                      "os_hash_value": hashlib.sha256(data).hexdigest()})


@pytest.fixture
def disk(tmp_path) -> str:
    path = tmp_path / "disk.img"
    path.write_bytes(b"\xa5" * DISK)
    return str(path)


def flood(conn, prefix: bytes, chunked: bool) -> None:
    """Send ``prefix`` then junk until FLOOD bytes or the client hangs up."""
    conn.sendall(prefix)
    piece = b"\xee" * MIB
    for _ in range(FLOOD // MIB):
        conn.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)


def test_bytes_past_content_length_are_not_written(disk):
    def answer(conn, request):
        conn.sendall(head("200 OK", {"Content-Length": len(IMAGE)}))
        send_pieces(conn, IMAGE + b"\xee" * (2 * MIB), ODD)
    with ScriptedServer([answer]) as server:
        result = write_image(spec(server.url), disk, FAST)
    content = open(disk, "rb").read()
    assert result.size == len(IMAGE) and content[:len(IMAGE)] == IMAGE
    assert content[len(IMAGE):] == b"\xa5" * (DISK - len(IMAGE))


@pytest.mark.parametrize("chunked", [False, True], ids=["close-delimited", "chunked"])
def test_endless_body_stops_at_the_end_of_the_disk(disk, chunked):
    prefix = (head("200 OK", {"Transfer-Encoding": "chunked"}) if chunked else
              b"HTTP/1.0 200 OK\r\nConnection: close\r\n\r\n")
    with ScriptedServer([lambda conn, request: flood(conn, prefix, chunked)]) as server:
        with pytest.raises(ImageWriteError, match="does not fit"):
            write_image(spec(server.url), disk, FAST)
    assert os.path.getsize(disk) == DISK
    assert open(disk, "rb").read(MIB) == bytes(MIB)


def test_resume_from_another_offset_is_refused(disk):
    cut = 3 * MIB + 5

    def first(conn, request):
        conn.sendall(head("200 OK", {"Content-Length": len(IMAGE), "ETag": '"a"'}))
        send_pieces(conn, IMAGE[:cut], ODD)

    def splice(conn, request):       # answers "bytes=cut-" with the image from byte 0
        conn.sendall(head("206 Partial Content", {
            "Content-Length": len(IMAGE), "ETag": '"a"',
            "Content-Range": f"bytes 0-{len(IMAGE) - 1}/{len(IMAGE)}"}))
        send_pieces(conn, IMAGE, ODD)
    with ScriptedServer([first, splice]) as server:
        with pytest.raises(ImageDownloadError, match=f"at byte 0, asked for {cut}"):
            write_image(spec(server.url), disk, FAST)
    assert server.requests[1].headers["range"] == f"bytes={cut}-"
    assert open(disk, "rb").read(MIB) == bytes(MIB)
