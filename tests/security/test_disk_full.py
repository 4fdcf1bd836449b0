"""A full disk under a running ``metalcast serve`` (finding 8 of the security review).

Before: node create answered 500 "OperationalError" (SQLite's "database or disk is
full"), and a patch upload that hit ENOSPC was "corrupt or truncated". Now every
path says "no space left on device: free space in <dir>", refuses without leaving
half-written files, and everything works again, intact, once space is freed.

The server's data dir is a 32 MiB tmpfs mounted for the test (the security tier
runs as root, as CI does).
"""
from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import requests

from tests.functional.conftest import start_server, stop_server
from tests.functional.rpm_tools import build_rpm
from tests.functional.test_sw_patch_input import snapshot

BIN = Path(sys.executable).parent
HEADERS = {"X-OpenStack-Ironic-API-Version": "latest"}
FULL = "no space left on device: free space in"


@pytest.fixture
def tiny_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m,mode=0700", "tmpfs",
                    str(mount)], check=True, capture_output=True, timeout=30)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False, timeout=30)


def fill(disk: Path, leave: int = 0) -> Path:
    """Fill ``disk`` until writes fail, then give back about ``leave`` bytes."""
    filler = disk / f"filler-{uuid.uuid4().hex[:6]}"
    with open(filler, "wb", buffering=0) as stream:
        for size in (1 << 20, 4096, 1):
            block = b"\xff" * size
            try:
                while True:
                    stream.write(block)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    if leave:
        os.truncate(filler, max(0, filler.stat().st_size - leave))
    return filler


def build_patch(work: Path, server, pid: str, version: str) -> Path:
    """A signed patch of labtool with 1 MiB of random payload (so sizes beat pages)."""
    rpm = build_rpm(work / pid, "labtool", version, "1", install=(
        "head -c 1048576 /dev/urandom > %{buildroot}/usr/share/labtool/blob"))
    out = work / "patches"
    proc = subprocess.run([BIN / "sw-patch-build", "--id", pid, "--release", "1.0",
                           "--reboot-required", "N", "--data-dir", server.data_dir,
                           "-o", out, rpm], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return out / f"{pid}.patch"


def upload(server, patch: Path) -> str:
    with open(patch, "rb") as stream:
        reply = requests.post(f"{server.url}/patching/v1/upload",
                              files={"file": (patch.name, stream)}, timeout=120)
    assert reply.status_code == 200, reply.text
    return reply.json()["error"]


def create_node(server, name: str) -> requests.Response:
    return requests.post(f"{server.url}/v1/nodes", headers=HEADERS, timeout=30,
                         json={"driver": "fake-hardware", "name": name})


def no_partial_files(server) -> bool:
    root = server.data_dir / "patching"
    scratch = list((root / "scratch").iterdir()) if (root / "scratch").exists() else []
    partial = [p for p in server.data_dir.rglob("*") if p.name.endswith(".part")]
    return not scratch and not list(root.glob(".upload-*")) and not partial


def test_a_full_disk_is_said_clearly_and_nothing_is_corrupted(tiny_disk, tmp_path):
    work = tmp_path / "work"
    server = start_server(tiny_disk / "data", {"patching": {"release": "1.0"}})
    try:
        subprocess.run([BIN / "metalcast", "patch", "keygen", "--data-dir", server.data_dir],
                       check=True, capture_output=True, timeout=60)
        feed = server.data_dir / "httpboot" / "feed" / "rel-1.0" / "Packages"
        feed.mkdir(parents=True)
        (feed / "labtool-1.0-1.noarch.rpm").write_bytes(
            build_rpm(work / "base", "labtool", "1.0", "1").read_bytes())
        first, second = (build_patch(work, server, "DISK_0001", "1.1"),
                         build_patch(work, server, "DISK_0002", "1.2"))
        assert upload(server, first) == ""
        nodes = [f"disk-{uuid.uuid4().hex[:8]}" for _ in range(3)]
        for name in nodes:
            assert create_node(server, name).status_code == 201
        before = snapshot(server)

        # 1. No room for the upload's scratch copy.
        filler = fill(tiny_disk)
        error = upload(server, second)
        assert f"{FULL} {server.data_dir / 'patching'}" in error, error
        # 2. Room for the copy, not for unpacking it: was "corrupt or truncated".
        filler.unlink()
        filler = fill(tiny_disk, leave=second.stat().st_size * 3 // 2)
        error = upload(server, second)
        assert FULL in error and "corrupt" not in error, error
        assert snapshot(server) == before and no_partial_files(server)
        # 3. Apply publishes into the update repo.
        filler.unlink()
        filler = fill(tiny_disk)
        reply = requests.post(f"{server.url}/patching/v1/apply/DISK_0001", timeout=120)
        assert f"{FULL} {server.data_dir / 'httpboot'}" in reply.json()["error"], reply.text
        assert not list((server.data_dir / "httpboot" / "updates").rglob("*.rpm"))
        # 4. The database: was 500 "OperationalError".
        for attempt in range(1000):
            reply = create_node(server, f"disk-full-{attempt}")
            if reply.status_code != 201:
                break
        assert reply.status_code == 507, reply.text
        fault = reply.json()["error_message"]
        assert f"{FULL} {server.data_dir}" in fault, fault
        assert server.process.poll() is None

        # Space again: everything works, nothing was lost or half-made.
        filler.unlink()
        assert upload(server, second) == ""
        reply = requests.post(f"{server.url}/patching/v1/apply/DISK_0001", timeout=120)
        assert reply.json()["error"] == "", reply.text
        assert create_node(server, f"disk-{uuid.uuid4().hex[:8]}").status_code == 201
        for name in nodes:
            reply = requests.get(f"{server.url}/v1/nodes/{name}", headers=HEADERS,
                                 timeout=30)
            assert reply.status_code == 200, reply.text
        query = requests.get(f"{server.url}/patching/v1/query", timeout=30).json()["pd"]
        assert query["DISK_0001"]["repostate"] == "Applied"
        assert query["DISK_0002"]["repostate"] == "Available"
        assert no_partial_files(server)
    finally:
        stop_server(server.process)
    with sqlite3.connect(server.data_dir / "metalcast.sqlite") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
