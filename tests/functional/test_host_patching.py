"""The host patch engine against real rpm, dnf, createrepo_c and an HTTP repo server.

Each test builds simulated hosts: install roots whose rpm database is at
/var/lib/rpm, populated with a busybox base package (``/bin/sh`` for scriptlets,
test-lab.md §6 pitfall 1). The base feed and the update repo (made by the
conductor's own ``UpdateRepo``, comps groups included) are served over HTTP on
127.0.0.1, as hosts reach them.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conductor.db import migrate
from conductor.db.engine import make_engine
from conductor.db.patch_hosts import PatchHostRows
from conductor.patching.controller import PatchController
from conductor.patching.hosts import HostReport
from conductor.patching.repo import UpdateRepo
from ramdisk_agent.errors import PatchEngineError
from ramdisk_agent.host import PatchEngine, repodata
from ramdisk_agent.host.convention import (
    SCRIPTS_SOURCE,
    reboot_required_scriptlets,
    restart_script_scriptlets,
)
from tests.functional.rpm_tools import build_rpm
from tests.functional.tools import require_all
from virtlab.imageserver import ImageServer

#: the real peers this lab drives (tests.functional.tools.TOOLS names their packages).
TOOLS = ("rpm", "rpmbuild", "dnf", "createrepo_c", "busybox", "mkfs.ext4", "chroot")
BASE_SH = ("Provides: /bin/sh\n"
           "%global _binaries_in_noarch_packages_terminate_build 0")
BASE_INSTALL = ("mkdir -p %{buildroot}/bin %{buildroot}/usr/bin\n"
                "cp {busybox} %{buildroot}/usr/bin/busybox\n"
                "ln -s ../usr/bin/busybox %{buildroot}/bin/sh")


def require_tools() -> None:
    require_all(TOOLS)


def _script_rpm(work: Path, name: str, version: str, body: list[str], **kw) -> Path:
    lines = "\n".join(f"echo '{line}' >> %{{buildroot}}{SCRIPTS_SOURCE}/{name}"
                      for line in ["#!/bin/sh", *body])
    return build_rpm(work, name, version, "1", install=f"mkdir -p %{{buildroot}}"
                     f"{SCRIPTS_SOURCE}\n{lines}", files=f"{SCRIPTS_SOURCE}/{name}", **kw)


class Lab:
    """RPMs built once, the HTTP server, and helpers to make repos and hosts."""

    def __init__(self, work: Path):
        self.work, self.www = work, work / "www"
        busybox = shutil.which("busybox")
        b = work / "build"
        self.base = [build_rpm(b, "hostbase", extra_tags=BASE_SH,
                               install=BASE_INSTALL.replace("{busybox}", busybox),
                               files="/bin/sh\n/usr/bin/busybox")]
        post = "%post\necho post $1 >> /var/log/post.log\n"
        self.base += [build_rpm(b, n, scripts=post) for n in ("pkga", "pkgb", "svcfix",
                                                              "svcbad", "kernelish")]
        self.rpm = {"pkga-1.1": build_rpm(b, "pkga", "1.1", scripts=post),
                    "pkgb-1.1-bad": build_rpm(b / "bad", "pkgb", "1.1",
                                              scripts="%pre\nexit 1\n"),
                    "pkgnew": build_rpm(b, "pkgnew"),
                    "stray": build_rpm(b, "stray"),
                    "svcfix-1.1": _script_rpm(
                        b, "svcfix", "1.1", ["echo restarted >> /var/log/svcfix.restarts",
                                             "touch $PATCH_FLAGDIR/svcfix.restarted",
                                             "touch /run/patching/.restart.patch-agent"],
                        scripts=restart_script_scriptlets("svcfix")),
                    "svcbad-1.1": _script_rpm(b, "svcbad", "1.1", ["exit 1"],
                                              scripts=restart_script_scriptlets("svcbad")),
                    "kernelish-1.1": build_rpm(b, "kernelish", "1.1",
                                               scripts=reboot_required_scriptlets())}
        feed = self.www / "feed" / "rel-1.0"
        (feed / "Packages" / "noarch").mkdir(parents=True)
        for rpm in self.base:
            shutil.copy(rpm, feed / "Packages" / "noarch")
        subprocess.run(["createrepo_c", "-q", str(feed)], check=True)
        self.server = ImageServer(str(self.www))
        self.server.start_background()
        self.base_url = f"{self.server.url}/feed/rel-1.0"

    def updates(self, name: str, rpms: list[str], groups: dict | None = None) -> str:
        """A fresh update repo holding ``rpms``; its URL."""
        repo = UpdateRepo(self.www / "updates" / name)
        for key in rpms:
            repo.add("noarch", self.rpm[key])
        repo.regenerate(groups or {})
        return f"{self.server.url}/updates/{name}"

    def set_updates(self, url: str, rpms: list[str], groups: dict | None = None) -> None:
        """Replace the contents of the update repo at ``url`` (apply / remove)."""
        directory = self.www / "updates" / url.rsplit("/", 1)[1]
        shutil.rmtree(directory / "Packages")
        repo = UpdateRepo(directory)
        for key in rpms:
            repo.add("noarch", self.rpm[key])
        repo.regenerate(groups or {})

    def host(self, root: Path, extra: tuple[str, ...] = ()) -> Path:
        """An installed host: the base packages (and ``extra`` RPMs) in ``root``."""
        rpm = ["rpm", "--root", str(root), "--dbpath", "/var/lib/rpm", "-i", "--quiet"]
        (root / "var/lib/rpm").mkdir(parents=True)
        subprocess.run([*rpm, str(self.base[0])], check=True, capture_output=True)
        subprocess.run([*rpm, *map(str, self.base[1:]), *(str(self.rpm[k]) for k in extra)],
                       check=True, capture_output=True)
        (root / "etc").mkdir(exist_ok=True)
        (root / "etc/hostname").write_text(root.name + "\n")
        return root


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    require_tools()
    lab = Lab(tmp_path_factory.mktemp("hostpatch"))
    yield lab
    lab.server.shutdown()
    lab.server.server_close()


def engine(lab: Lab, root: Path, updates: str | None, **kw) -> PatchEngine:
    return PatchEngine(root, base_repo_url=lab.base_url, updates_repo_url=updates,
                       sw_version="1.0", **kw)


def installed(root: Path) -> dict[str, str]:
    out = subprocess.run(["rpm", "--root", str(root), "--dbpath", "/var/lib/rpm", "-qa",
                          "--qf", "%{NAME} %{VERSION}-%{RELEASE}\\n"],
                         check=True, capture_output=True, text=True).stdout
    return dict(line.split(" ") for line in out.splitlines())


def test_upgrade_then_removed_patch_downgrades(lab, tmp_path):
    url = lab.updates("up", ["pkga-1.1"])
    host = engine(lab, lab.host(tmp_path / "controller-0"), url, ip="192.0.2.10")
    report = host.report()
    assert report["out_of_date"] is True
    assert report["installed"] == {"pkga": "1.0-1@noarch"}
    assert (report["to_remove"], report["missing_pkgs"], report["state"]) == ([], [], "idle")
    assert HostReport.from_dict(report).hostname == "controller-0"   # the controller's shape
    # the report reads primary.xml itself; it must see exactly what dnf sees
    direct = {pkg for u in (lab.base_url, url) for pkg in repodata.packages(u)}
    assert direct == set(host.tools.available()) and len(direct) == 7
    result = host.install(force=True)
    assert result["status"] is True and result["upgrade"] == ["pkga-1.1-1.noarch"], result
    assert installed(host.root)["pkga"] == "1.1-1"
    assert host.report()["out_of_date"] is False
    assert result["requires_reboot"] is False      # no RR flag, no scripts: effective now
    lab.set_updates(url, [])                       # the patch is removed from the repo
    report = host.report()
    assert report["out_of_date"] and report["installed"] == {"pkga": "1.1-1@noarch"}
    result = host.install(force=True)
    assert result["downgrade"] == ["pkga-1.0-1.noarch"] and result["status"], result
    assert installed(host.root)["pkga"] == "1.0-1"
    assert not host.report()["out_of_date"]


def test_to_remove_and_missing_group_packages_per_personality(lab, tmp_path):
    url = lab.updates("groups", ["pkgnew"], {"worker": ["pkgnew"]})
    ctrl = engine(lab, lab.host(tmp_path / "controller-0", ("stray",)), url)
    worker = engine(lab, lab.host(tmp_path / "worker-0"), url, nodetype="worker")
    aio = engine(lab, lab.host(tmp_path / "aio"), url, subfunctions=["controller", "worker"])
    report = ctrl.report()
    assert (report["to_remove"], report["missing_pkgs"]) == (["stray"], [])
    assert worker.report()["missing_pkgs"] == ["pkgnew"]
    assert aio.report()["out_of_date"] is False    # group updates-controller-worker is empty
    assert ctrl.install(force=True)["erase"] == ["stray-1.0-1.noarch"]
    assert "stray" not in installed(ctrl.root) and not ctrl.report()["out_of_date"]
    assert worker.install(force=True)["install"] == ["pkgnew"]
    assert installed(worker.root)["pkgnew"] == "1.0-1"
    assert not worker.report()["out_of_date"]


def test_restart_scripts_run_and_a_failing_one_fails_the_install(lab, tmp_path):
    url = lab.updates("scripts", ["svcfix-1.1"])
    host = engine(lab, lab.host(tmp_path / "controller-0"), url)
    result = host.install(locked=True)
    assert result["status"] is True and result["requires_reboot"] is False, result
    assert result["restart_agent"] is True         # the script asked for an agent restart
    assert (host.root / "var/log/svcfix.restarts").read_text() == "restarted\n"
    assert (host.root / "run/patching/patch-flags/svcfix.restarted").exists()
    assert "running svcfix" in (host.root / "var/log/patching-insvc.log").read_text()
    assert not (host.root / "run/node_is_patched").exists()
    lab.set_updates(url, ["svcfix-1.1", "svcbad-1.1"])
    result = host.install(locked=True)
    assert result["status"] is False and result["patch_failed"] is True, result
    assert "1 restart script(s) failed" in result["error"]
    report = host.report()
    # installed and patch-current, but failed and still needing a reboot (§4.5)
    assert (report["out_of_date"], report["patch_failed"], report["state"],
            report["node_is_patched"]) == (False, True, "install-failed", True)


def test_reboot_required_rpm_keeps_the_host_patched_and_skips_scripts(lab, tmp_path):
    url = lab.updates("rr", ["kernelish-1.1", "svcfix-1.1"])
    host = engine(lab, lab.host(tmp_path / "controller-0"), url)
    result = host.install(locked=True)
    assert result["status"] is True and result["requires_reboot"] is True, result
    assert (host.root / "run/node_is_patched_rr").exists()
    assert not (host.root / "var/log/svcfix.restarts").exists()   # scripts skipped
    report = host.report()
    assert report["node_is_patched"] is True and report["out_of_date"] is False


def test_unlocked_host_rejects_an_unforced_install(lab, tmp_path):
    url = lab.updates("reject", ["pkga-1.1"])
    now = [1000.0]
    host = engine(lab, lab.host(tmp_path / "controller-0"), url, clock=lambda: now[0])
    result = host.install()
    assert result == {"status": False, "state": "install-rejected",
                      "reject_reason": "Host is not locked: lock it or force the install"}
    assert installed(host.root)["pkga"] == "1.0-1"
    assert host.report()["state"] == "install-rejected"
    now[0] += 61
    assert host.state == "idle"                    # reverts after 60 s
    host.install()
    assert host.state == "install-rejected"
    (host.root / "run").mkdir(exist_ok=True)
    (host.root / "run/.node_locked").touch()       # mtce locked the node
    assert host.state == "idle"
    assert host.install()["status"] is True        # locked: installs without force
    assert installed(host.root)["pkga"] == "1.1-1"


def test_broken_transaction_is_undone(lab, tmp_path):
    url = lab.updates("broken", ["pkga-1.1", "pkgb-1.1-bad", "pkgnew"], {"controller": ["pkgnew"]})
    host = engine(lab, lab.host(tmp_path / "controller-0"), url)
    before = installed(host.root)
    result = host.install(force=True)
    assert result["status"] is False and result["undone"] is True, result
    assert "dnf transaction failed" in result["error"]
    assert installed(host.root) == before          # pkga back to 1.0, pkgnew gone
    report = host.report()
    assert (report["state"], report["patch_failed"], report["out_of_date"]) == \
        ("install-failed", True, True)
    assert not (host.root / "run/patch_installing").exists()


def test_duplicated_packages_need_manual_recovery(lab, tmp_path):
    root = lab.host(tmp_path / "controller-0")
    subprocess.run(["rpm", "--root", str(root), "--dbpath", "/var/lib/rpm", "-i",
                    "--replacefiles", str(lab.rpm["pkga-1.1"])], check=True, capture_output=True)
    host = engine(lab, root, lab.updates("dup", ["pkga-1.1"]))
    assert host.report()["duplicated_pkgs"] == {"pkga": {"noarch": ["1.0-1", "1.1-1"]}}
    result = host.install(force=True)
    assert result["status"] is False and "manual recovery required" in result["error"]


def test_boot_install_reboots_once(lab, tmp_path):
    url = lab.updates("boot", ["pkga-1.1"])
    root = lab.host(tmp_path / "controller-0")
    result = engine(lab, root, url).boot_install()
    assert result["reboot"] is True and result["status"] is True, result
    assert (root / "etc/patching/.patched_during_init").exists()
    shutil.rmtree(root / "run")                    # the reboot: /run is a tmpfs
    result = engine(lab, root, url).boot_install()
    assert result["reboot"] is False and result["changed"] is False
    assert not (root / "etc/patching/.patched_during_init").exists()
    # A boot that patches again right after a boot-time reboot does not reboot again.
    (root / "etc/patching/.patched_during_init").touch()
    lab.set_updates(url, ["pkga-1.1", "svcfix-1.1"])
    host = engine(lab, root, url)
    result = host.boot_install()
    assert result["reboot"] is False and result["status"] is False, result
    assert host.report()["patch_failed"] is True
    assert host.boot_install()["reboot"] is False  # the failed flag stops boot installs


def test_interrupted_install_is_marked_failed(lab, tmp_path):
    root = lab.host(tmp_path / "controller-0")
    (root / "run").mkdir()
    (root / "run/patch_installing").touch()
    host = engine(lab, root, None)
    assert host.state == "install-failed"
    assert (root / "run/patch_install_failed").exists()
    assert not (root / "run/patch_installing").exists()


def test_bad_repo_and_missing_database_are_clear_errors(lab, tmp_path):
    root = lab.host(tmp_path / "controller-0")
    host = engine(lab, root, f"{lab.server.url}/updates/does-not-exist")
    with pytest.raises(PatchEngineError, match="cannot read .*/does-not-exist/repodata/repomd"):
        host.report()
    before = installed(root)
    result = host.install(force=True)
    assert result["status"] is False and "does-not-exist/repodata" in result["error"]
    assert installed(root) == before
    with pytest.raises(PatchEngineError, match="no RPM database at /var/lib/rpm"):
        engine(lab, tmp_path / "empty", None).report()
    with pytest.raises(ValueError, match="must be inside the root"):
        engine(lab, root, None, run_dir=tmp_path / "elsewhere")


def test_install_into_a_freshly_written_ext4_root(lab, tmp_path):
    url = lab.updates("ramdisk", ["pkga-1.1", "kernelish-1.1", "pkgnew"],
                      {"controller": ["pkgnew"]})
    image, mnt = tmp_path / "root.img", tmp_path / "mnt"
    subprocess.run(["truncate", "-s", "64M", str(image)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True, capture_output=True)
    mnt.mkdir()
    subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], check=True)
    try:
        lab.host(mnt, ("stray",))
        ramdisk = engine(lab, tmp_path / "ramdisk", url, cache_dir=tmp_path / "cache")
        result = ramdisk.install_into_root(mnt)
        assert result["status"] and result["upgrade"] == ["kernelish-1.1-1.noarch",
                                                          "pkga-1.1-1.noarch"], result
        versions = installed(mnt)
        assert (versions["pkga"], versions["pkgnew"], versions["stray"]) == \
            ("1.1-1", "1.0-1", "1.0-1")            # a fresh image keeps its own extras
        assert not (mnt / "run/node_is_patched_rr").exists()
        assert not (mnt / "run/patching").exists()
        assert not (mnt / "tmp").exists()          # no dnf litter from the cache dir
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
    assert not list(mnt.iterdir())


def test_controller_patch_lifecycle_seen_by_a_host(lab, tmp_path):
    """Upload/apply/remove on the real PatchController, the host installs, states follow:
    the engine's report is exactly what the controller's §2.2 algorithm consumes."""
    bin_dir = Path(sys.executable).parent
    data = tmp_path / "data"
    subprocess.run([bin_dir / "metalcast", "patch", "keygen", "--data-dir", data],
                   check=True, capture_output=True)
    subprocess.run([bin_dir / "sw-patch-build", "--id", "E2E_0001", "--release", "1.0",
                    "--reboot-required", "N", "--controller", "pkgnew", "--data-dir", data,
                    "-o", tmp_path, lab.rpm["svcfix-1.1"], lab.rpm["pkgnew"]],
                   check=True, capture_output=True)
    root = lab.www / "ctl"
    feed = root / "feed" / "rel-1.0"
    shutil.copytree(lab.www / "feed" / "rel-1.0", feed)
    engine = make_engine(f"sqlite:///{tmp_path / 'metalcast.sqlite'}")
    migrate.upgrade(engine)
    ctl = PatchController(root, data / "patching" / "trusted", "1.0",
                          host_rows=PatchHostRows(engine))
    assert ctl.upload([tmp_path / "E2E_0001.patch"]).error == ""
    assert ctl.apply(["E2E_0001"]).error == ""
    feed_url, repo_url = (f"{lab.server.url}/{path.relative_to(lab.www)}"
                          for path in (ctl.store.feed_dir("1.0"), ctl.store.repo_dir("1.0")))
    host = PatchEngine(lab.host(tmp_path / "controller-0"), sw_version="1.0",
                       base_repo_url=feed_url, updates_repo_url=repo_url)

    def report() -> str:
        ctl.report_host(HostReport.from_dict(host.report()))
        return ctl.patch_state("E2E_0001")

    assert report() == "Partial-Apply"
    assert host.report()["missing_pkgs"] == ["pkgnew"]
    assert host.install(force=True)["status"] is True
    assert report() == "Applied"
    assert (host.root / "var/log/svcfix.restarts").exists()   # in-service: script ran
    assert ctl.remove(["E2E_0001"]).error == ""
    assert report() == "Partial-Remove"
    result = host.install(force=True)
    assert result["downgrade"] == ["svcfix-1.0-1.noarch"] and result["status"], result
    assert report() == "Available"
    # the restart script also ran on removal (%preun copied it): two restarts logged
    assert (host.root / "var/log/svcfix.restarts").read_text() == "restarted\nrestarted\n"
    engine.dispose()


def test_cli_report_and_install(lab, tmp_path):
    url = lab.updates("cli", ["pkga-1.1"])
    root = lab.host(tmp_path / "controller-0")
    argv = [sys.executable, "-m", "ramdisk_agent.host.cli", "--root", str(root),
            "--base-url", lab.base_url, "--updates-url", url, "--sw-version", "1.0"]
    proc = subprocess.run([*argv, "--report"], capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr        # out of date, like sw-patch-agent --status
    assert json.loads(proc.stdout)["installed"] == {"pkga": "1.0-1@noarch"}
    proc = subprocess.run([*argv, "--install"], capture_output=True, text=True)
    assert proc.returncode == 1 and json.loads(proc.stdout)["state"] == "install-rejected"
    proc = subprocess.run([*argv, "--install", "--force"], capture_output=True, text=True)
    assert proc.returncode == 0 and json.loads(proc.stdout)["status"] is True, proc.stdout
    assert subprocess.run([*argv, "--report"], capture_output=True).returncode == 0
    proc = subprocess.run([*argv[:-2], "--report"], capture_output=True, text=True)
    assert proc.returncode == 2 and "--base-url and --sw-version are required" in proc.stderr
