"""The patch reader process (conductor/patching/unpack.py) under hostile input: a read
that never ends is killed at the wall-clock timeout, one that burns CPU is stopped by
its own limit, and what is refused leaves no process behind."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from conductor.patching.metadata import PatchFormatError
from conductor.patching.unpack import IsolatedReader, ProcessLimits
from tests.security.test_patch_upload import _children, _gone, gzip_header_bomb
from tests.waiting import wait_until

MARKER = "conductor.patching.unpack"


def test_a_read_that_never_ends_is_killed_at_the_timeout(tmp_path):
    """A FIFO nobody writes: the reader blocks on it, as on any input that stalls."""
    fifo = tmp_path / "STALL_0001.patch"
    os.mkfifo(fifo)
    reader = IsolatedReader(process=ProcessLimits(wall_seconds=1))
    with reader.session() as session:
        with pytest.raises(PatchFormatError, match="took longer than 1 s; refused"):
            session.read(fifo, tmp_path, tmp_path / "w")
        assert session.proc is None
        # The session goes on with a new reader: the next file is read as usual.
        bomb = tmp_path / "EVIL_0001.patch"
        bomb.write_bytes(gzip_header_bomb())
        with pytest.raises(PatchFormatError, match="extended tar header"):
            session.read(bomb, tmp_path, tmp_path / "w2")
    wait_until(lambda: not _children(os.getpid(), MARKER),
               message="no reader process left after the session")


def test_the_cpu_budget_stops_a_reader_that_spins():
    """The child's own limit (``_cpu_budget``): SIGXCPU ends it, whatever it runs."""
    code = textwrap.dedent("""
        from conductor.patching import unpack
        unpack._cpu_budget(1)
        while True:
            pass
    """)
    proc = subprocess.run([sys.executable, "-I", "-c", code], timeout=60)
    assert proc.returncode == -signal.SIGXCPU


def test_the_reader_dies_with_its_parent(tmp_path):
    """PR_SET_PDEATHSIG: a reader whose server was killed (SIGKILL, no clean-up) goes too."""
    code = textwrap.dedent(f"""
        import os, subprocess, sys
        from conductor.patching import unpack
        child = unpack._Child(unpack.archive.Limits(), unpack.ProcessLimits())
        proc = child._start()
        proc.stdin.flush()
        print(proc.pid, flush=True)
        os.mkfifo({str(tmp_path / "fifo")!r})
        child.read(unpack.Path({str(tmp_path / "fifo")!r}), unpack.Path("."),
                   unpack.Path({str(tmp_path / "w")!r}))
    """)
    parent = subprocess.Popen([sys.executable, "-I", "-c", code], stdout=subprocess.PIPE,
                              text=True)
    try:
        reader = int(parent.stdout.readline())
        wait_until(lambda: reader in _children(parent.pid, MARKER),
                   message="the reader process to start")
        wait_until(lambda: (tmp_path / "fifo").exists(), message="the reader to block")
        parent.kill()
        parent.wait(30)
        wait_until(lambda: _gone(reader), timeout=10,
                   message=f"reader {reader} to die with its parent")
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(30)
        parent.stdout.close()
