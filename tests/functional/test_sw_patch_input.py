"""`sw-patch` bad input against a real `metalcast serve` (issue 6 item 10), plus the
release and helper sub-commands (init-release, del-release, completion, install-local).

Every failing call must print a clear error, exit 1 and leave the patch store and
the update repos byte for byte as they were.
"""
from __future__ import annotations

import hashlib
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.functional.rpm_tools import build_rpm
from tests.functional.test_sw_patch import BIN, build, patching_server, sw_patch

UNKNOWN = "NOPE_0001"
#: KNOWN_0001 is a DEV patch: StarlingX refuses any commit then, before it looks at IDs.
COMMIT_UNKNOWN = ("The following patches will be committed:\n\nError:\nA commit cannot be "
                  "performed with non-REL status patches in the system:\n    KNOWN_0001\n\n"
                  "Aborting...\n")
#: sub-command argv (the unknown ID appended) -> what it must print on stdout (StarlingX's
#: client's lines) and, where that client shows nothing of the error, on stderr.
UNKNOWN_ID_ERRORS = {
    ("apply",): ("Error:\nPatch NOPE_0001 does not exist\n\n", ""),
    ("remove",): ("Error:\nPatch NOPE_0001 does not exist\n\n", ""),
    ("delete",): ("Error:\nPatch NOPE_0001 does not exist\n\n", ""),
    ("what-requires",): ("Error:\nPatch NOPE_0001 does not exist\n\n", ""),
    ("show",): ("Error:\nNOPE_0001 is unrecognized\n\n", ""),
    ("query-dependencies",): ("", "Error: NOPE_0001 is unrecognized\n"),
    ("query-dependencies", "--recursive"): ("", "Error: NOPE_0001 is unrecognized\n"),
    ("commit",): (COMMIT_UNKNOWN, ""),
    ("commit", "--dry-run"): (COMMIT_UNKNOWN, ""),
    ("is-applied",): ("False\n", ""),
    ("is-available",): ("False\n", ""),
}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    work = tmp_path_factory.mktemp("swpatch-input")
    with patching_server(work, {"1.0": ("labtool",), "2.0": ("labtool",)}) as server:
        yield work, server


def snapshot(server) -> dict[str, str]:
    """Every file of the patch store and the web root's update repos, by content."""
    found = {}
    for top in (server.data_dir / "patching", server.data_dir / "httpboot" / "updates"):
        for path in sorted(top.rglob("*")) if top.exists() else []:
            if path.is_file():
                found[str(path.relative_to(server.data_dir))] = \
                    hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def query(server) -> dict[str, str]:
    """Patch ID -> Repo State (no host reports here, so the column is shown)."""
    lines = sw_patch(server, "query").stdout.splitlines()
    if not lines:
        return {}
    assert "Repo State" in lines[0], lines
    return {row[0]: row[3] for row in (line.split() for line in lines[2:]) if row}


def test_unknown_ids_in_every_command(lab):
    work, server = lab
    known = build(work, server, "KNOWN_0001", [("labtool", "1.1")])
    assert sw_patch(server, "upload", known).returncode == 0
    before = snapshot(server)
    for argv, (expected, error) in UNKNOWN_ID_ERRORS.items():
        proc = sw_patch(server, *argv, UNKNOWN, stdin="y\n")
        assert (proc.returncode, proc.stdout, proc.stderr) == (1, expected, error), (argv, proc)
    # One unknown ID among known ones: nothing happens to the known one either.
    for argv in (("apply",), ("delete",)):
        proc = sw_patch(server, *argv, "KNOWN_0001", UNKNOWN)
        assert proc.returncode == 1 and "Patch NOPE_0001 does not exist" in proc.stdout
    assert snapshot(server) == before
    assert query(server) == {"KNOWN_0001": "Available"}
    # An application may need a patch not uploaded yet: recorded, as StarlingX does.
    assert sw_patch(server, "report-app-dependencies", "--app", "kube", UNKNOWN).returncode == 0
    assert sw_patch(server, "query-app-dependencies").stdout.splitlines()[2].split() == \
        ["kube", UNKNOWN]
    proc = sw_patch(server, "report-app-dependencies", "--app", "kube", "bad^id")
    assert proc.returncode == 1 and "Invalid patch ID: 'bad^id'" in proc.stderr, proc
    assert sw_patch(server, "report-app-dependencies", "--app", "kube").returncode == 0
    assert sw_patch(server, "query-app-dependencies").stdout == \
        "There are no application dependencies.\n"


def _broken_files(work: Path, good: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, the error it must give)."""
    bad = work / "bad"
    bad.mkdir()
    garbage = bad / "GARBAGE_0001.patch"
    garbage.write_bytes(b"not a tar archive at all" * 100)
    truncated = bad / "TRUNC_0001.patch"
    truncated.write_bytes(good.read_bytes()[:len(good.read_bytes()) // 3])
    wrong_ext = bad / "WRONG_0001.tar"
    shutil.copy(good, wrong_ext)
    empty = bad / "EMPTY_0001.patch"
    with tarfile.open(empty, "w"):
        pass
    return {"garbage": (garbage, "Error:\n"), "truncated": (truncated, "Error:\n"),
            "extension": (wrong_ext, "File must end in .patch extension: WRONG_0001.tar"),
            "empty": (empty, "Error:\n")}


def test_duplicate_ids_and_failed_uploads_leave_the_store_alone(lab):
    work, server = lab
    (work / "first").mkdir()
    first = shutil.move(build(work, server, "DUP_0001", [("labtool", "2.0")]),
                        work / "first" / "DUP_0001.patch")
    assert sw_patch(server, "upload", first).returncode == 0
    # A different file under the same patch ID: a re-import whose contents differ.
    other_dir = work / "other"
    other_dir.mkdir()
    second = shutil.move(build(work, server, "DUP_0001", [("labtool", "2.1")]),
                         other_dir / "DUP_0001.patch")
    renamed = other_dir / "ALIAS_0001.patch"          # same ID inside, other file name
    shutil.copy(second, renamed)
    low = build(work, server, "LOW_0001", [("labtool", "0.9")])
    taken = build(work, server, "TAKEN_0001", [("labtool", "2.0")])
    proc = subprocess.run([BIN / "sw-patch-build", "--id", "REL9_0001", "--release", "9.9",
                           "--data-dir", server.data_dir, "-o", work / "rel9",
                           build_rpm(work / "rel9rpm", "labtool", "3.1", "1")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    cases = {
        "reimport": (second, "Contents of DUP_0001 do not match re-imported patch"),
        "alias": (renamed, "Patch validation failed for ALIAS_0001:\n"
                           "Patch DUP_0001 already exists"),
        "lower": (low, "Patch validation failed for LOW_0001:\nRPM labtool-0.9-1.noarch.rpm "
                       "in patch LOW_0001 must be higher version than original (1.0-1)"),
        "taken": (taken, "which is already provided by patch DUP_0001"),
        "release": (work / "rel9" / "REL9_0001.patch",
                    "software release (9.9) is not installed"),
        **_broken_files(work, first)}
    before = snapshot(server)
    for name, (path, expected) in cases.items():
        proc = sw_patch(server, "upload", path)
        assert proc.returncode == 1 and expected in proc.stdout, (name, proc)
        assert snapshot(server) == before, name
    assert query(server) == {"KNOWN_0001": "Available", "DUP_0001": "Available"}
    # The same file again is fine: metadata only.
    proc = sw_patch(server, "upload", first)
    assert proc.stdout == "DUP_0001 is already imported. Updated metadata only\n\n", proc
    # The same ID twice in one command counts once.
    proc = sw_patch(server, "apply", "DUP_0001", "DUP_0001")
    assert (proc.returncode, proc.stdout) == (0, "DUP_0001 is now in the repo\n\n"), proc
    proc = sw_patch(server, "remove", "DUP_0001", "DUP_0001")
    assert (proc.returncode, proc.stdout) == \
        (0, "DUP_0001 has been removed from the repo\n\n"), proc
    proc = sw_patch(server, "delete", "DUP_0001", "DUP_0001")
    assert (proc.returncode, proc.stdout) == (0, "DUP_0001 has been deleted\n\n"), proc


def test_init_and_del_release(lab):
    work, server = lab
    updates = server.data_dir / "httpboot" / "updates"
    for command in ("init-release", "del-release"):
        proc = sw_patch(server, command, "1.0")
        assert (proc.returncode, proc.stdout) == (
            1, "Error:\nRejected: Requested release 1.0 is running release\n\n"), proc
        for bad in ("..", "a/b", "-x"):
            proc = sw_patch(server, command, "--", bad)
            assert proc.returncode == 1 and "Invalid release" in proc.stdout, (bad, proc)
    proc = sw_patch(server, "init-release", "2.0")           # done: StarlingX says nothing
    assert (proc.returncode, proc.stdout) == (0, ""), proc
    assert (updates / "rel-2.0" / "repodata" / "repomd.xml").is_file()
    assert (updates / "rel-2.0" / "comps.xml").is_file()
    proc = sw_patch(server, "init-release", "2.0")
    assert proc.stdout == "Patch repository for 2.0 already exists\n\n" and not proc.returncode

    patch = subprocess.run([BIN / "sw-patch-build", "--id", "TWO_0001", "--release", "2.0",
                            "--data-dir", server.data_dir, "-o", work / "two",
                            build_rpm(work / "tworpm", "labtool", "2.5", "1")],
                           capture_output=True, text=True)
    assert patch.returncode == 0, patch.stderr
    assert sw_patch(server, "upload", work / "two" / "TWO_0001.patch").returncode == 0
    assert sw_patch(server, "apply", "TWO_0001").returncode == 0
    assert list((updates / "rel-2.0").rglob("labtool-2.5-1*.rpm"))
    kept = {k: v for k, v in snapshot(server).items() if "2.0" not in k and "TWO" not in k}

    proc = sw_patch(server, "del-release", "2.0")            # likewise
    assert (proc.returncode, proc.stdout) == (0, ""), proc
    assert not (updates / "rel-2.0").exists()
    assert not (server.data_dir / "patching" / "packages" / "2.0").exists()
    assert "TWO_0001" not in query(server)
    assert snapshot(server) == kept               # release 1.0 untouched
    proc = sw_patch(server, "del-release", "2.0")
    assert proc.stdout == "Patch repository for 2.0 does not exist\n\n" and not proc.returncode


def test_completion_and_install_local(lab):
    _work, server = lab
    proc = sw_patch(server, "completion", "patches")
    ids = proc.stdout.split()
    assert proc.returncode == 0 and ids == sorted(query(server)) and "KNOWN_0001" in ids
    proc = sw_patch(server, "completion", "hosts")
    assert (proc.returncode, proc.stdout) == (0, "")     # no host agent reports here
    proc = sw_patch(server, "completion", "nodes")
    assert proc.returncode == 2 and "invalid choice" in proc.stderr
    proc = sw_patch(server, "install-local")
    assert proc.returncode == 1
    assert proc.stdout.startswith("Error: install-local is not supported"), proc.stdout
