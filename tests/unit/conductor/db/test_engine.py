"""The SQLite file is created 0600 before SQLite opens it; a looser one is restricted."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from conductor.db.engine import private_sqlite_file


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o7777


@pytest.fixture
def open_umask():
    previous = os.umask(0)
    yield
    os.umask(previous)


def test_a_new_database_file_is_private_whatever_the_umask(tmp_path, open_umask):
    path = tmp_path / "new" / "metalcast.sqlite"
    private_sqlite_file(path)
    assert path.read_bytes() == b""        # an empty file is an empty SQLite database
    assert _mode(path) == 0o600 and _mode(path.parent) == 0o700


def test_existing_files_keep_their_content_and_lose_other_users(tmp_path, caplog):
    path = tmp_path / "metalcast.sqlite"
    for suffix, mode in (("", 0o644), ("-wal", 0o640), ("-shm", 0o600)):
        Path(f"{path}{suffix}").write_bytes(b"data" + suffix.encode())
        os.chmod(f"{path}{suffix}", mode)
    with caplog.at_level(logging.WARNING, logger="conductor.db.engine"):
        private_sqlite_file(path)
    for suffix in ("", "-wal", "-shm"):
        companion = Path(f"{path}{suffix}")
        assert _mode(companion) == 0o600
        assert companion.read_bytes() == b"data" + suffix.encode()
    assert "(mode 0644)" in caplog.text and "(mode 0640)" in caplog.text
    assert len(caplog.records) == 2        # the -shm was private already
