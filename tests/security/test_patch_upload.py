"""Patch uploads to a running ``metalcast serve`` (findings 5, 6 and 8 of the security
review), each attack replayed against the fix:

* a tar whose pax header tarfile parses in quadratic time (CVE-2024-6232) froze every
  route for ~14 s (96 KiB) to minutes (a 256 KiB gzip), and SIGTERM waited for it;
* a signed patch with ``sw_version=1.0/../../../../X`` wrote its RPM outside the data dir;
* upload file names ``..``, ``/``, ``.`` and 300 characters answered 500.

The patching API keeps StarlingX's contract for a refused patch (HTTP 200 and the
reason in ``error``, which both sw-patch clients print); a request whose file name is
unusable is refused with 400.
"""
from __future__ import annotations

import concurrent.futures
import gzip
import hashlib
import io
import os
import signal
import tarfile
import uuid
from pathlib import Path

import pytest
import requests

from conductor.patching import signing
from tests.functional.conftest import start_server, stop_server
from tests.functional.rpm_tools import build_rpm
from tests.functional.test_sw_patch import patching_server
from tests.functional.test_sw_patch_input import snapshot
from tests.waiting import wait_until

#: "The API answers promptly": a generous bound on a loaded 2-core machine.
PROMPT = 5


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    work = tmp_path_factory.mktemp("upload-attacks")
    with patching_server(work, {"1.0": ("labtool",)}) as server:
        yield work, server


def upload(server, name: str, data: bytes, timeout: float = 120) -> requests.Response:
    return requests.post(f"{server.url}/patching/v1/upload",
                         files={"file": (name, data)}, timeout=timeout)


def tar_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _ustar(name: str, kind: bytes, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.type, info.size = kind, size
    return info.tobuf(format=tarfile.GNU_FORMAT)


def pax_header_tar() -> bytes:
    """The first report: a .patch whose first member has a 96 KiB pax header of digits."""
    payload = b"1" * (96 << 10)
    raw = (_ustar("././@PaxHeader", tarfile.XHDTYPE, len(payload)) + payload +
           _ustar("metadata.tar", tarfile.REGTYPE, 0) + b"\0" * 1024)
    return gzip.compress(raw)


def gzip_header_bomb() -> bytes:
    """The second: 256 KiB of gzip that declares and holds a 256 MiB pax header."""
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=9) as stream:
        stream.write(_ustar("././@PaxHeader", tarfile.XHDTYPE, 256 << 20))
        digits = b"1" * (1 << 20)
        for _ in range(256):
            stream.write(digits)
    assert len(buffer.getvalue()) < 512 << 10
    return buffer.getvalue()


def api_answers(server) -> bool:
    response = requests.get(f"{server.url}/v1", timeout=PROMPT)
    return response.status_code == 200


def leftovers(server) -> list[str]:
    """Upload work directories and scratch files still on disk after a request."""
    root = server.data_dir / "patching"
    found = [p.name for p in root.glob(".upload-*")]
    scratch = root / "scratch"
    return found + ([p.name for p in scratch.iterdir()] if scratch.exists() else [])


@pytest.mark.parametrize("make", [pax_header_tar, gzip_header_bomb])
def test_quadratic_tar_headers_are_refused_while_the_api_answers(lab, make):
    _, server = lab
    data, before = make(), snapshot(server)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(upload, server, "EVIL_0001.patch", data)
        for _ in range(3):      # every route answers while the upload is processed
            assert api_answers(server)
        reply = pending.result(timeout=120)
    assert reply.status_code == 200, reply.text
    error = reply.json()["error"]
    assert "EVIL_0001" in error and "extended tar header of" in error, error
    assert "is refused" in error and "Traceback" not in server.output()
    assert snapshot(server) == before and leftovers(server) == []
    assert api_answers(server)


def signed_patch(key_path: Path, rpm: Path, release: str, patch_id: str) -> bytes:
    """A patch signed with the server's own trusted key whose metadata says
    ``sw_version`` = ``release`` (built by hand: the builder validates it)."""
    xml = (f"<patch><id>{patch_id}</id><sw_version>{release}</sw_version>"
           f"<status>REL</status><reboot_required>N</reboot_required>"
           f"<contents><rpm>{rpm.name}</rpm></contents></patch>").encode()
    members = {"metadata.tar": tar_bytes({"metadata.xml": xml}),
               "software.tar": tar_bytes({rpm.name: rpm.read_bytes()})}
    signed = [members["metadata.tar"], members["software.tar"]]
    md5s = [hashlib.md5(data).hexdigest() for data in signed]
    digest = hashlib.sha256(b"".join(signed)).digest()
    members["signature"] = signing.v1_checksum(md5s).encode()
    members["signature.v2"] = signing.v2_sign(signing.load_private(key_path), digest)
    return gzip.compress(tar_bytes(members))


def test_a_signed_patch_cannot_write_outside_the_data_dir(lab):
    """``packages/<sw_version>`` and ``feed/rel-<sw_version>`` both resolve to a
    directory beside the data dir: before the fix the RPM was written there."""
    work, server = lab
    rpm = build_rpm(work / "evil", "labtool", "9.9", "1")
    escape = server.data_dir.parent / f"escaped-{uuid.uuid4().hex[:8]}"
    escape.mkdir()      # so the "release is installed" check passes, as it did
    key = server.data_dir / "patching" / "keys" / "formal-private-key.pem"
    before = snapshot(server)
    for release in (f"1.0/../../../../{escape.name}", f"../../../{escape.name}",
                    str(escape), "1.0/.."):
        reply = upload(server, "EVIL_0002.patch",
                       signed_patch(key, rpm, release, "EVIL_0002"))
        assert reply.status_code == 200, reply.text
        assert "Invalid release" in reply.json()["error"], (release, reply.json())
        assert list(escape.iterdir()) == []
    assert snapshot(server) == before and leftovers(server) == []
    assert not list(server.data_dir.rglob(rpm.name + "*"))
    query = requests.get(f"{server.url}/patching/v1/query", timeout=30).json()
    assert "EVIL_0002" not in query["pd"]


@pytest.mark.parametrize("name", ["..", "/", ".", "x" * 300 + ".patch", "a/../..",
                                  "/etc/..", "bad\x01name.patch"])
def test_hostile_upload_file_names_are_refused_with_400(lab, name):
    _, server = lab
    before = snapshot(server)
    reply = upload(server, name, b"not a patch")
    assert reply.status_code == 400, reply.text
    body = reply.json()
    assert body["info"] == "" and "Invalid patch file name" in body["error"], body
    assert snapshot(server) == before and leftovers(server) == []
    assert api_answers(server)


def _children(pid: int, marker: str) -> list[int]:
    """PIDs of ``pid``'s children whose command line holds ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        ppid = next((int(line.split()[1]) for line in status.splitlines()
                     if line.startswith("PPid:")), 0)
        if ppid == pid and marker in cmdline:
            found.append(int(entry.name))
    return found


def _gone(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    return "\nState:\tZ" in status     # dead, waiting for init to reap it


def slow_patch(path: Path) -> Path:
    """An unsigned patch with 16 MiB of random software.tar: the reader extracts and
    hashes it (~0.2 s) before it finds there is no signature."""
    members = {"metadata.tar": tar_bytes({"metadata.xml": b"<patch><id>S</id></patch>"}),
               "software.tar": tar_bytes({"a-1-1.noarch.rpm": os.urandom(16 << 20)}),
               "signature": b"0"}
    path.write_bytes(gzip.compress(tar_bytes(members), compresslevel=1))
    return path


def test_sigterm_stops_the_server_promptly_during_uploads(tmp_path):
    """An upload_dir of 200 patches (header bombs among them) keeps a reader process
    busy for tens of seconds: SIGTERM still stops the server at once, and its reader
    dies with it."""
    drop = tmp_path / "drop"
    drop.mkdir()
    one = slow_patch(tmp_path / "slow.patch")
    bomb = tmp_path / "bomb.patch"
    bomb.write_bytes(gzip_header_bomb())
    for i in range(200):    # the header bombs among them are refused in passing
        (drop / f"SLOW_{i:04d}.patch").symlink_to(bomb if i % 10 == 0 else one)
    server = start_server(tmp_path / "data", {"patching": {"release": "1.0"}})
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pending = pool.submit(requests.post, f"{server.url}/patching/v1/upload_dir",
                                  params={"dir0": str(drop)}, timeout=300)
            readers = wait_until(lambda: _children(server.process.pid,
                                                   "conductor.patching.unpack"),
                                 message="a patch reader process of the server")
            assert api_answers(server)
            server.process.send_signal(signal.SIGTERM)
            wait_until(lambda: server.process.poll() is not None, timeout=10,
                       message="the server to exit after SIGTERM")
            wait_until(lambda: all(_gone(pid) for pid in readers), timeout=10,
                       message=f"reader processes {readers} to die with the server")
            with pytest.raises(requests.RequestException):
                pending.result(timeout=60)
    finally:
        stop_server(server.process)
