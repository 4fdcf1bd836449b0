"""Data at rest: the data dir, the database and the secrets key are the owner's only.

The attack: the SQLite file (every node's encrypted BMC secrets, the hashed tokens)
was 0644 in a 0755 data dir, so any local user could copy it. Replayed by starting an
appliance in a fresh directory, under the most permissive umask, and by starting one
on the loose directory an older version left; the modes are read with stat.
"""
from __future__ import annotations

import logging
import os
import sqlite3
import stat
from pathlib import Path

import pytest

from api import create_app
from conductor import config
from conductor.appliance import Appliance

LATEST = {"X-OpenStack-Ironic-API-Version": "latest"}


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask():
    """umask 000: whatever metalcast creates gets exactly the mode it asks for."""
    previous = os.umask(0)
    yield
    os.umask(previous)


def _run(data_dir: Path) -> None:
    """Start an appliance, write a node with a secret (so SQLite has its WAL), stop."""
    settings = config.from_options({"data_dir": str(data_dir), "pxe.enabled": False,
                                    "conductor.host": "security-test",
                                    "conductor.sync_power_state_interval": 0})
    appliance = Appliance(settings)
    appliance.start()
    try:
        client = create_app(appliance.service).test_client()
        response = client.post("/v1/nodes", headers=LATEST, json={
            "driver": "fake-hardware", "driver_info": {"ipmi_password": "pw-at-rest"}})
        assert response.status_code == 201, response.get_json()
        _assert_private(data_dir)   # while it runs: -wal and -shm exist now
    finally:
        appliance.stop()


def _assert_private(data_dir: Path) -> None:
    assert _mode(data_dir) == 0o700
    assert _mode(data_dir / "keys") == 0o700
    assert _mode(data_dir / "keys" / "secrets.key") == 0o600
    database = data_dir / "metalcast.sqlite"
    companions = [Path(f"{database}{suffix}") for suffix in ("-wal", "-shm")]
    assert all(p.exists() for p in companions), list(data_dir.iterdir())
    for path in [database, *companions]:
        assert _mode(path) == 0o600, path


def test_a_fresh_data_dir_is_private_whatever_the_umask(tmp_path, open_umask):
    data_dir = tmp_path / "new" / "data"
    _run(data_dir)
    assert _mode(data_dir) == 0o700 and _mode(data_dir / "metalcast.sqlite") == 0o600


def test_a_loose_data_dir_from_an_older_version_is_tightened(tmp_path, caplog):
    data_dir = tmp_path / "data"
    _run(data_dir)
    # What an older version left: a 0755 dir and a 0644 database (+ its WAL).
    with sqlite3.connect(data_dir / "metalcast.sqlite") as conn:
        conn.execute("PRAGMA journal_mode=WAL")
    os.chmod(data_dir, 0o755)
    for name in ("metalcast.sqlite", "metalcast.sqlite-wal", "metalcast.sqlite-shm"):
        if (data_dir / name).exists():
            os.chmod(data_dir / name, 0o644)
    with caplog.at_level(logging.WARNING):
        _run(data_dir)
    warned = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert f"Data dir {data_dir} was accessible by other users (mode 0755)" in warned
    assert "metalcast.sqlite was accessible by other users (mode 0644)" in warned
