"""`sw-patch` against a real `metalcast serve`: StarlingX's tables, messages, exit codes."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.functional.conftest import start_server, stop_server
from tests.functional.rpm_tools import build_rpm

BIN = Path(sys.executable).parent


@contextlib.contextmanager
def patching_server(work: Path, feeds: dict[str, tuple[str, ...]], subdir: str = "Packages"):
    """A real `metalcast serve` running release 1.0, with a patch signing key and, per
    release, a base feed (``feed/rel-RELEASE/SUBDIR``) of the named RPMs at 1.0-1."""
    server = start_server(work / "data", {"patching": {"release": "1.0"}})
    try:
        subprocess.run([BIN / "metalcast", "patch", "keygen", "--data-dir", server.data_dir],
                       check=True, capture_output=True)
        for release, names in feeds.items():
            feed = server.data_dir / "httpboot" / "feed" / f"rel-{release}" / subdir
            feed.mkdir(parents=True)
            for name in names:
                shutil.copy(build_rpm(work / "base", name, "1.0", "1"), feed)
        yield server
    finally:
        stop_server(server.process)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    work = tmp_path_factory.mktemp("swpatch")
    with patching_server(work, {"1.0": ("labpatch", "labtool")}, "Packages/noarch") as server:
        yield work, server


def sw_patch(server, *argv, stdin: str | None = None):
    env = dict(os.environ, METALCAST_URL=server.url, SW_PATCH_POLL_INTERVAL="0.2")
    return subprocess.run([BIN / "sw-patch", *map(str, argv)], capture_output=True,
                          text=True, env=env, input=stdin, timeout=120)


def build(work, server, pid, rpms, *extra):
    files = [build_rpm(work / pid, name, version, "1") for name, version in rpms]
    out = work / "patches"
    proc = subprocess.run([BIN / "sw-patch-build", "--id", pid, "--release", "1.0",
                           "--data-dir", server.data_dir, "-o", out, *extra, *files],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return out / f"{pid}.patch"


def test_walkthrough_without_hosts(lab):
    work, server = lab
    one = build(work, server, "LAB_0001", [("labpatch", "1.1")], "--reboot-required", "N",
                "--status", "REL", "--summary", "Fix the lab", "--desc", "First line\nSecond")
    proc = sw_patch(server, "upload", one)
    assert proc.returncode == 0 and proc.stdout == "LAB_0001 is now available\n\n", proc
    proc = sw_patch(server, "query")
    # No host has reported yet: patch state n/a, so the Repo State column appears.
    assert proc.stdout == (
        "Patch ID  RR  Release  Repo State  Patch State\n"
        "========  ==  =======  ==========  ===========\n"
        "LAB_0001  N     1.0    Available       n/a    \n"
        "\n"), repr(proc.stdout)
    proc = sw_patch(server, "apply", "LAB_0001")
    assert proc.returncode == 0 and proc.stdout == "LAB_0001 is now in the repo\n\n"
    proc = sw_patch(server, "show", "LAB_0001")
    lines = proc.stdout.splitlines()
    assert lines[0] == "LAB_0001:"
    assert "    Release:        1.0" in lines
    assert "    Repo State:     Applied" in lines
    assert "    Summary:        Fix the lab" in lines
    assert "    Description:    First line" in lines and " " * 20 + "Second" in lines
    assert "    Contents:" in lines and " " * 20 + "labpatch-1.1-1.noarch.rpm" in lines
    assert not [line for line in lines if "Unremovable" in line]    # <unremovable/>
    assert proc.stdout.endswith("\n\n\n")
    assert sw_patch(server, "is-applied", "LAB_0001").returncode == 1   # n/a, not Applied
    proc = sw_patch(server, "query", "--format", "json")
    assert json.loads(proc.stdout)["pd"]["LAB_0001"]["repostate"] == "Applied"


def test_dependencies_and_errors(lab):
    work, server = lab
    base = build(work, server, "DEP_0001", [("labtool", "2.0")])
    top = build(work, server, "DEP_0002", [("labtool", "2.1")], "--req", "DEP_0001")
    assert sw_patch(server, "upload", base, top).returncode == 0
    proc = sw_patch(server, "apply", "DEP_0002")
    assert proc.returncode == 1
    assert proc.stdout == "Error:\nDEP_0001 is required by: DEP_0002\n\n"
    proc = sw_patch(server, "what-requires", "DEP_0001")
    assert proc.stdout == "DEP_0001 is required by: DEP_0002\n\n"
    proc = sw_patch(server, "query-dependencies", "DEP_0002", "--recursive")
    assert proc.stdout.split() == ["DEP_0001", "DEP_0002"]
    proc = sw_patch(server, "delete", "DEP_0001")
    assert proc.returncode == 1 and "DEP_0001 is required by: DEP_0002" in proc.stdout
    assert sw_patch(server, "delete", "DEP_0001", "DEP_0002").returncode == 0
    proc = sw_patch(server, "apply", "NOPE_0001")
    assert proc.returncode == 1 and "Patch NOPE_0001 does not exist" in proc.stdout
    proc = sw_patch(server, "show", "NOPE_0001")
    assert "NOPE_0001 is unrecognized" in proc.stdout and proc.returncode == 1
    proc = sw_patch(server, "upload", work / "missing.patch")
    assert proc.returncode == 1 and "File does not exist" in proc.stdout
    tampered = work / "TAMPER_0001.patch"
    data = bytearray(build(work, server, "TAMPER_0001", [("labtool", "2.2")]).read_bytes())
    data[len(data) // 2] ^= 0xFF
    tampered.write_bytes(data)
    before = sorted(p.name for p in (server.data_dir / "patching").rglob("*"))
    proc = sw_patch(server, "upload", tampered)
    assert proc.returncode == 1 and proc.stdout.startswith("Error:\n"), proc.stdout
    assert sorted(p.name for p in (server.data_dir / "patching").rglob("*")
                  if "scratch" not in str(p)) == [p for p in before if p != "scratch"]


def test_hosts_app_dependencies_and_commit(lab):
    work, server = lab
    proc = sw_patch(server, "query-hosts")
    assert proc.stdout.splitlines()[0].split("  ")[0] == "Hostname"
    proc = sw_patch(server, "host-install", "nosuchhost")
    assert proc.returncode == 1 and "Unknown host specified: nosuchhost" in proc.stdout
    app = build(work, server, "APP_0001", [("labtool", "3.0")], "--status", "REL")
    sw_patch(server, "upload", app)
    assert sw_patch(server, "report-app-dependencies", "APP_0001", "--app", "kube")\
        .returncode == 0
    proc = sw_patch(server, "query-app-dependencies")
    assert proc.stdout.splitlines()[2].split() == ["kube", "APP_0001"]
    sw_patch(server, "apply", "APP_0001")
    proc = sw_patch(server, "remove", "APP_0001")
    assert proc.returncode == 1 and "required by application(s): kube" in proc.stdout
    proc = sw_patch(server, "commit", "--dry-run", "APP_0001")
    # Every patch is REL, but with no host reporting its state is n/a, not Applied.
    assert proc.returncode == 1 and proc.stdout.endswith(
        "Error:\nThe following patches are not applied and cannot be committed:\n"
        "    APP_0001\n\nAborting...\n"), proc.stdout


@pytest.mark.parametrize("prefix", ["/patching/v1", "/patch", "/v1"])
def test_patching_api_needs_auth_beyond_loopback(basic_server, prefix):
    """The patch API answers under StarlingX's /patch/ and /v1/ and metalcast's first
    /patching/v1/, behind the same authentication as the rest of the API."""
    response = requests.get(basic_server.url + prefix + "/query", timeout=10)
    assert response.status_code == 401
    response = requests.get(basic_server.url + prefix + "/query", timeout=10,
                            auth=(basic_server.username, basic_server.password))
    assert response.status_code == 200 and "pd" in response.json()
    assert response.headers["X-Metalcast-Running-Release"] == "1.0"


def test_alarm_list_shows_patching_alarms(lab):
    work, server = lab
    env = dict(os.environ, METALCAST_URL=server.url)
    obsolete = build(work, server, "OBS_0001", [("labtool", "4.0")], "--status", "OBS")
    sw_patch(server, "upload", obsolete)
    subprocess.run([BIN / "metalcast", "patch", "keygen", "--name", "dev", "--data-dir",
                    server.data_dir], check=True, capture_output=True)
    proc = subprocess.run([BIN / "metalcast", "alarm", "list", "--format", "json"],
                          capture_output=True, text=True, env=env, check=True)
    alarms = {a["alarm_id"]: a for a in json.loads(proc.stdout)}
    assert alarms["900.003"]["severity"] == "warning"
    assert alarms["500.101"]["severity"] == "critical"
    assert alarms["900.003"]["entity_instance_id"] == "host=controller"
    proc = subprocess.run([BIN / "metalcast", "alarm", "list"], capture_output=True,
                          text=True, env=env, check=True)
    assert "Obsolete patch in system" in proc.stdout
    (server.data_dir / "patching" / "trusted" / "dev-certificate.pem").unlink()
    assert sw_patch(server, "delete", "OBS_0001").returncode == 0
    proc = subprocess.run([BIN / "metalcast", "alarm", "list", "--format", "json"],
                          capture_output=True, text=True, env=env, check=True)
    assert json.loads(proc.stdout) == []
