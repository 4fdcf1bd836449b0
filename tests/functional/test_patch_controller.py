"""The patch controller with real RPMs, a real base feed and createrepo_c (§1.5, §5)."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conductor.db import migrate
from conductor.db.engine import make_engine
from conductor.db.patch_hosts import PatchHostRows
from conductor.patching import hosts, signing
from conductor.patching.controller import PatchController
from tests.functional.rpm_tools import build_rpm
from tests.functional.tools import require

BIN = Path(sys.executable).parent


class Lab:
    """Keys, RPMs and patches built once for the module."""

    def __init__(self, work: Path):
        self.work = work
        self.data = work / "data"
        subprocess.run([BIN / "metalcast", "patch", "keygen", "--data-dir", self.data],
                       check=True, capture_output=True)
        self.base = [build_rpm(work / "base", "labpatch", "1.0", "1"),
                     build_rpm(work / "base", "labtool", "1.0", "1")]
        self.out = work / "patches"

    def patch(self, pid: str, rpms: list[tuple[str, str]], *extra: str) -> Path:
        files = [build_rpm(self.work / pid, name, version, "1") for name, version in rpms]
        proc = subprocess.run([BIN / "sw-patch-build", "--id", pid, "--release", "1.0",
                               "--data-dir", self.data, "-o", self.out, *extra, *files],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        return self.out / f"{pid}.patch"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    require("createrepo_c")
    return Lab(tmp_path_factory.mktemp("patchctl"))


@pytest.fixture
def sqlite_url(tmp_path):
    """A migrated SQLite file: the hosts' states live in the database."""
    url = f"sqlite:///{tmp_path / 'metalcast.sqlite'}"
    engine = make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    return url


@pytest.fixture
def host_rows(sqlite_url):
    engine = make_engine(sqlite_url)
    yield PatchHostRows(engine)
    engine.dispose()


@pytest.fixture
def ctl(lab, tmp_path, host_rows):
    root = tmp_path / "patching"
    feed = root / "feed" / "rel-1.0" / "Packages" / "noarch"
    feed.mkdir(parents=True)
    for rpm in lab.base:
        shutil.copy(rpm, feed)
    return PatchController(root, lab.data / "patching" / "trusted", "1.0",
                           host_rows=host_rows)


def _tree(path: Path) -> dict:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file()}


def test_upload_apply_remove_delete(lab, ctl):
    p1 = lab.patch("LAB_0001", [("labpatch", "1.1")], "--reboot-required", "N",
                   "--status", "REL")
    result = ctl.upload([p1])
    assert result.error == "" and result.info == "LAB_0001 is now available\n"
    assert ctl.query()["pd"]["LAB_0001"]["patchstate"] == "n/a"   # no hosts known
    assert ctl.query()["pd"]["LAB_0001"]["repostate"] == "Available"
    result = ctl.apply(["LAB_0001"])
    assert result.info == "LAB_0001 is now in the repo\n", result
    repo = ctl.store.repo_dir("1.0")
    assert (repo / "Packages" / "noarch" / "labpatch-1.1-1.noarch.rpm").exists()
    assert (repo / "repodata" / "repomd.xml").exists()
    assert b"updates-controller" in (repo / "comps.xml").read_bytes()
    result = ctl.remove(["LAB_0001"])
    assert result.info == "LAB_0001 has been removed from the repo\n"
    assert not (repo / "Packages" / "noarch" / "labpatch-1.1-1.noarch.rpm").exists()
    assert ctl.delete(["LAB_0001"]).info == "LAB_0001 has been deleted\n"
    assert ctl.query()["pd"] == {}


def test_reupload_updates_metadata_only(lab, ctl):
    p1 = lab.patch("LAB_0002", [("labtool", "1.2")])
    ctl.upload([p1])
    again = ctl.upload([p1])
    assert again.info == "LAB_0002 is already imported. Updated metadata only\n"


def test_upload_validation_errors_leave_nothing(lab, ctl, tmp_path):
    before = _tree(ctl.store.root)
    lower = lab.patch("LAB_LOW", [("labpatch", "0.9")])
    result = ctl.upload([lower])
    assert "must be higher version than original (1.0-1)" in result.error
    wrong = tmp_path / "LAB_OTHER.patch"
    other = lab.patch("LAB_REL2", [("labtool", "1.3")])
    shutil.copy(other, wrong)
    notpatch = tmp_path / "x.tar"
    notpatch.write_bytes(b"junk")
    result = ctl.upload([notpatch, tmp_path / "missing.patch"])
    assert "File must end in .patch" in result.error
    assert "File does not exist" in result.error
    assert _tree(ctl.store.root) == before


def test_release_not_installed(lab, ctl):
    proc = subprocess.run([BIN / "sw-patch-build", "--id", "LAB_R9", "--release", "9.9",
                           "--data-dir", lab.data, "-o", lab.out,
                           build_rpm(lab.work / "r9", "labtool", "5.0", "1")],
                          capture_output=True, text=True)
    assert proc.returncode == 0
    result = ctl.upload([lab.out / "LAB_R9.patch"])
    assert "software release (9.9) is not installed" in result.error


def test_same_rpm_in_two_patches_is_refused(lab, ctl):
    a = lab.patch("LAB_A", [("labtool", "1.5")])
    ctl.upload([a])
    b = lab.out / "LAB_B.patch"
    subprocess.run([BIN / "sw-patch-build", "--id", "LAB_B", "--release", "1.0",
                    "--data-dir", lab.data, "-o", lab.out,
                    lab.work / "LAB_A" / "rpmbuild" / "RPMS" / "noarch" /
                    "labtool-1.5-1.noarch.rpm"], check=True, capture_output=True)
    assert "already provided by patch LAB_A" in ctl.upload([b]).error


def test_dependency_order_requires_and_delete_guard(lab, ctl):
    base = lab.patch("DEP_0001", [("labpatch", "2.0")], "--status", "REL")
    top = lab.patch("DEP_0002", [("labtool", "2.0")], "--req", "DEP_0001", "--status", "REL")
    ctl.upload([base, top])
    result = ctl.apply(["DEP_0002"])
    assert result.error == "DEP_0001 is required by: DEP_0002\n"
    assert ctl.apply(["DEP_0002", "DEP_0001"]).info == \
        "DEP_0001 is now in the repo\nDEP_0002 is now in the repo\n"
    assert ctl.remove(["DEP_0001"]).error == "DEP_0001 is required by: DEP_0002\n"
    assert ctl.what_requires(["DEP_0001"]).info == "DEP_0001 is required by: DEP_0002\n"
    assert ctl.query_dependencies(["DEP_0002"], recursive=True)["patches"] == \
        ["DEP_0001", "DEP_0002"]
    assert ctl.remove(["DEP_0002", "DEP_0001"]).info == \
        "DEP_0002 has been removed from the repo\nDEP_0001 has been removed from the repo\n"
    assert "DEP_0001 is required by: DEP_0002" in ctl.delete(["DEP_0001"]).error
    assert ctl.delete(["DEP_0001", "DEP_0002"]).error == ""


def test_commit_dry_run_and_commit(lab, ctl):
    one = lab.patch("COM_0001", [("labtool", "3.0")], "--status", "REL")
    two = lab.patch("COM_0002", [("labtool", "3.1")], "--status", "REL", "--req", "COM_0001")
    ctl.upload([one, two])
    ctl.apply(["--all"])
    ctl.report_host(hosts.HostReport(hostname="controller-0", sw_version="1.0"))
    dry = ctl.commit(["COM_0002"], dry_run=True)
    assert dry.error == "" and "would free" in dry.info
    done = ctl.commit(["COM_0002"])
    assert done.error == "", done
    pd = ctl.query()["pd"]
    assert pd["COM_0001"]["patchstate"] == pd["COM_0002"]["patchstate"] == "Committed"
    assert not ctl.store.package_path("1.0", "labtool-3.0-1.noarch.rpm").exists()
    assert ctl.remove(["COM_0002"]).error == "Patch COM_0002 is committed and cannot be removed\n"
    assert ctl.upload([two]).info == "COM_0002 is committed. Metadata not updated\n"


def test_patch_states_follow_host_reports(lab, ctl):
    p = lab.patch("ST_0001", [("labpatch", "4.0")], "--reboot-required", "N")
    ctl.upload([p])
    ctl.report_host(hosts.HostReport(hostname="compute-0", sw_version="1.0"))
    assert ctl.patch_state("ST_0001") == "Available"
    ctl.apply(["ST_0001"])
    assert ctl.patch_state("ST_0001") == "Partial-Apply"          # interim
    behind = hosts.HostReport(hostname="compute-0", sw_version="1.0", out_of_date=True,
                              installed={"labpatch": "1.0-1@noarch"})
    ctl.report_host(behind)
    assert ctl.patch_state("ST_0001") == "Partial-Apply"          # host still old
    ctl.report_host(hosts.HostReport(hostname="compute-0", sw_version="1.0"))
    assert ctl.patch_state("ST_0001") == "Applied"
    ctl.remove(["ST_0001"])
    ahead = hosts.HostReport(hostname="compute-0", sw_version="1.0", out_of_date=True,
                             installed={"labpatch": "4.0-1@noarch"})
    ctl.report_host(ahead)
    assert ctl.patch_state("ST_0001") == "Partial-Remove"
    assert ctl.hosts.allow_insvc_patching()
    assert ctl.drop_host("compute-0").as_dict() == {"info": "", "warning": "", "error": ""}
    assert ctl.patch_state("ST_0001") == "n/a"


def test_apply_and_remove_wait_for_installing_hosts(lab, ctl):
    """StarlingX's API refuses them while a host installs, in its words (no newline: its
    API says it, not its controller)."""
    ctl.upload([lab.patch("IN_0001", [("labpatch", "4.2")])])
    ctl.report_host(hosts.HostReport(hostname="compute-0", sw_version="1.0",
                                     state="installing"))
    for result in (ctl.apply(["IN_0001"]), ctl.remove(["IN_0001"])):
        assert result.as_dict() == {"info": "", "warning": "", "error":
                                    "Rejected: One or more nodes are installing patches."}
    ctl.report_host(hosts.HostReport(hostname="compute-0", sw_version="1.0"))
    assert ctl.apply(["IN_0001"]).info == "IN_0001 is now in the repo\n"


def test_a_restarted_controller_keeps_host_and_interim_states(lab, ctl, sqlite_url):
    """Host states live in the database: a new controller on it (a restart, or a second
    conductor) shows the same hosts, Pending ones included, and the first one reads
    back what the second recorded."""
    ctl.upload([lab.patch("RS_0001", [("labpatch", "4.5")])])
    ctl.report_host(hosts.HostReport(hostname="compute-0", ip="192.0.2.10", sw_version="1.0"))
    assert ctl.apply(["RS_0001"]).error == ""
    engine = make_engine(sqlite_url)
    try:
        again = PatchController(ctl.store.root, ctl.trusted_dir, "1.0",
                                host_rows=PatchHostRows(engine))
        assert again.query()["pd"]["RS_0001"]["patchstate"] == "Partial-Apply"
        [host] = again.query_hosts()
        assert (host["hostname"], host["ip"], host["interim_state"]) == \
            ("compute-0", "192.0.2.10", True)
        again.report_host(hosts.HostReport(hostname="compute-0", ip="192.0.2.10",
                                           sw_version="1.0"))
        assert ctl.query()["pd"]["RS_0001"]["patchstate"] == "Applied"
        assert ctl.query_hosts()[0]["interim_state"] is False
    finally:
        engine.dispose()


def test_trust_dir_without_keys_refuses(lab, tmp_path, host_rows):
    p = lab.patch("TR_0001", [("labtool", "6.0")])
    root = tmp_path / "p"
    (root / "feed" / "rel-1.0").mkdir(parents=True)
    empty = PatchController(root, tmp_path / "no-trust", "1.0", host_rows=host_rows)
    assert "no trusted patch keys" in empty.upload([p]).error
    assert signing.load_trusted(tmp_path / "no-trust") == []


def _alarm_ids(ctl) -> list[str]:
    return [a.alarm_id for a in ctl.alarms.list()]


def test_alarms_are_raised_and_cleared(lab, ctl):
    p = lab.patch("AL_0001", [("labpatch", "5.0")])
    ctl.upload([p])
    assert _alarm_ids(ctl) == []
    ctl.report_host(hosts.HostReport(hostname="compute-1", sw_version="1.0"))
    ctl.apply(["AL_0001"])
    assert _alarm_ids(ctl) == ["900.001"]          # Partial-Apply while compute-1 is behind
    ctl.report_host(hosts.HostReport(hostname="compute-1", sw_version="1.0",
                                     patch_failed=True, state="install-failed"))
    alarms = {a.alarm_id: a for a in ctl.alarms.list()}
    assert "900.002" in alarms and "compute-1" in alarms["900.002"].reason_text
    assert "900.001" not in alarms                  # the host reported: no longer interim
    ctl.report_host(hosts.HostReport(hostname="compute-1", sw_version="1.0"))
    assert _alarm_ids(ctl) == []
    obsolete = lab.patch("AL_0002", [("labtool", "5.0")], "--status", "OBS")
    ctl.upload([obsolete])
    assert _alarm_ids(ctl) == ["900.003"]
    ctl.delete(["AL_0002"])
    assert _alarm_ids(ctl) == []
