"""StarlingX's own ``sw-patch`` (6.0.0, unchanged) against metalcast, and ours beside it.

StarlingX's client is the peer copied verbatim into ../shared/peers, run from its
source folder with the venv of scripts/install-peers (tests/functional/stx_peers.py).
It talks to ``http://127.0.0.1:5487/patch/...`` and nowhere else, so both clients run
in a private network namespace (tests/functional/private_net.py) where ``metalcast
serve`` holds that port with its patching listener; StarlingX's client talks to it as
to its controller (as root), metalcast's own ``sw-patch`` to the main API port. One
host, controller-0, runs a real ``metalcast-agent host`` (its own rpm database, dnf
against the update repo).

Every command is checked three ways: what StarlingX's client prints and its exit
code are StarlingX's (the texts below are its controller's and client's, 6.0.0), and
ours prints the same lines. Commands that change state run on twin patches, R_* for
StarlingX's client and O_* for ours, so each sees the same state; reading ones run
both on the same patches. The exit codes differ only where StarlingX's client is
wrong (what-requires and query-dependencies exit 0 as root whatever happened, an
upload of a missing file or a directory exits 0): there ours exits 1.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.functional.conftest import start_server, stop_server
from tests.functional.private_net import PrivateNet
from tests.functional.rpm_tools import build_rpm
from tests.functional.stx_peers import SW_PATCH, require_peers
from tests.functional.test_host_patching import BASE_INSTALL, BASE_SH, require_tools
from tests.waiting import wait_until
from virtlab.process import start_ready, stop

BIN = Path(sys.executable).parent
PORT = 5487                 # StarlingX's local patch API, where its client talks
HOST = "controller-0"
HTTP_RE = re.compile(r"metalcast HTTP boot server on (http://\S+?)/ ")
WAIT = 120
TWINS = ("R", "O")          # R_*: StarlingX's client's patches, O_*: ours
#: package -> base version in the feed; each twin has its own (rtool, otool, ...).
PACKAGES = ("tool", "lib", "cfg")
RUNNING = "1.0"


class PeerLab:
    """The namespace, the server, StarlingX's client, the patches and the host."""

    def __init__(self, work: Path):
        require_tools()
        self.peers = require_peers()
        self.work = work
        self.net = PrivateNet()
        self.agent = None
        try:
            self.server = start_server(work / "data", {
                "pxe": {"enabled": "true", "tftp_port": 0, "http_port": 0},
                "patching": {"release": RUNNING, "listen_port": PORT}},
                prefix=self.net.prefix)
            self.http = HTTP_RE.search(self.server.output()).group(1)
            subprocess.run([BIN / "metalcast", "patch", "keygen", "--data-dir",
                            self.server.data_dir], check=True, capture_output=True)
            self._feed()
            self._host()
        except BaseException:
            self.close()
            raise

    def _feed(self) -> None:
        rpms = self.work / "rpms"
        busybox = shutil.which("busybox")
        self.base = [build_rpm(rpms, "hostbase", extra_tags=BASE_SH,
                               install=BASE_INSTALL.replace("{busybox}", busybox),
                               files="/bin/sh\n/usr/bin/busybox")]
        self.base += [build_rpm(rpms, f"{t.lower()}{name}") for t in TWINS
                      for name in PACKAGES]
        feed = self.server.data_dir / "httpboot" / "feed" / f"rel-{RUNNING}"
        (feed / "Packages" / "noarch").mkdir(parents=True)
        for rpm in self.base:
            shutil.copy(rpm, feed / "Packages" / "noarch")
        subprocess.run(["createrepo_c", "-q", str(feed)], check=True)

    def _host(self) -> None:
        root = self.work / "host"
        (root / "var/lib/rpm").mkdir(parents=True)
        rpm = ["rpm", "--root", str(root), "--dbpath", "/var/lib/rpm", "-i", "--quiet"]
        subprocess.run([*rpm, str(self.base[0])], check=True, capture_output=True)
        subprocess.run([*rpm, *map(str, self.base[1:])], check=True, capture_output=True)
        url = self.server.url
        node = self.net.api(url, "POST", "/v1/nodes", {
            "driver": "fake-hardware", "name": HOST,
            "properties": {"nodetype": "controller"}}, ok=(201,))
        for target, state in (("manage", "manageable"), ("adopt", "active")):
            self.net.api(url, "PUT", f"/v1/nodes/{node['uuid']}/states/provision",
                         {"target": target}, ok=(202,))
            wait_until(lambda s=state: self.net.api(url, "GET", f"/v1/nodes/{node['uuid']}")
                       ["provision_state"] == s, WAIT, 0.2, f"{HOST} {state}")
        self.uuid, self.root = node["uuid"], root
        (self.work / "state").mkdir()
        issued = self.net.run([BIN / "metalcast", "--url", url, "host", "token", HOST,
                               "--output", self.work / "state" / "host-agent-token.json"])
        assert issued.returncode == 0, issued
        self.start_agent()

    def start_agent(self) -> None:
        cmd = [*self.net.prefix, BIN / "metalcast-agent", "host", "--api-url",
               self.server.url, "--node-uuid", self.uuid, "--listen", "127.0.0.1:0",
               "--advertise-host", "127.0.0.1", "--state-dir", self.work / "state",
               "--heartbeat-interval", "2", "--root", self.root,
               "--base-url", f"{self.http}/feed/rel-{RUNNING}",
               "--updates-url", f"{self.http}/updates/rel-{RUNNING}",
               "--sw-version", RUNNING, "--nodetype", "controller"]
        self.agent = start_ready([str(c) for c in cmd], "METALCAST-AGENT ", 60, "host agent")

    def build(self, pid: str, rpms: dict[str, str], *options: str) -> Path:
        """``<pid>.patch`` of RPMs {name: version}; status REL unless options say."""
        files = [build_rpm(self.work / "build" / pid, name, version)
                 for name, version in rpms.items()]
        out = self.work / "patches"
        proc = subprocess.run([BIN / "sw-patch-build", "--id", pid, "--release", RUNNING,
                               "--data-dir", self.server.data_dir, "-o", out, "--status",
                               "REL", *options, *files], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        return out / f"{pid}.patch"

    def starlingx(self, *argv: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        """StarlingX's sw-patch, as root on its controller (127.0.0.1:5487), from its
        source folder (which may be read-only: no .pyc), the running release from its
        tsconfig shim."""
        env = _env(PYTHONPATH=f"{SW_PATCH / 'cgcs-patch'}:{SW_PATCH / 'shims'}",
                   PYTHONDONTWRITEBYTECODE="1", STX_SW_VERSION=RUNNING)
        return self.net.run([self.peers / "bin" / "python", SW_PATCH / "bin" / "sw-patch",
                             *argv], env=env, input=stdin)

    def ours(self, *argv: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        """metalcast's sw-patch, at the main API port."""
        env = _env(METALCAST_URL=self.server.url, SW_PATCH_POLL_INTERVAL="1")
        return self.net.run([BIN / "sw-patch", *argv], env=env, input=stdin)

    def hosts(self) -> dict[str, list[str]]:
        """query-hosts as printed: hostname -> its columns."""
        lines = self.ours("query-hosts").stdout.splitlines()[2:]
        return {row[0]: row for row in (re.split(r"\s{2,}", line.strip()) for line in lines)}

    def close(self) -> None:
        if self.agent is not None:
            stop(self.agent[0].pid, self.agent[0])
        if getattr(self, "server", None) is not None:
            stop_server(self.server.process)
        self.net.close()


def _env(**extra: str) -> dict[str, str]:
    """No terminal (both clients wrap at 72 columns then), none of the caller's
    settings for either client."""
    env = {k: v for k, v in os.environ.items() if k not in ("TERM", "COLUMNS")
           and not k.startswith(("METALCAST_", "OS_", "PYTHON", "STX_"))}
    return dict(env, **extra)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = PeerLab(tmp_path_factory.mktemp("stx-peer"))
    yield lab
    lab.close()


def twins(lab: PeerLab, argv: str, expected: str, rc: int, ours_rc: int | None = None,
          stdin: str | None = None, mask=lambda text: text) -> None:
    """StarlingX's client runs ``argv`` with {T} = R ({t} = r), ours with {T} = O: each
    prints ``expected`` (its {T} and {t} likewise; ``mask`` applied to what it printed)
    and exits ``rc`` (ours: ``ours_rc`` if given)."""
    for twin, run, code in (("R", lab.starlingx, rc), ("O", lab.ours,
                                                      rc if ours_rc is None else ours_rc)):
        names = {"T": twin, "t": twin.lower()}
        args = [word.format(**names) for word in argv.split()]
        proc = run(*args, stdin=stdin)
        assert (proc.returncode, mask(proc.stdout)) == (code, expected.format(**names)), \
            (twin, args, proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr, proc.stderr


def same(lab: PeerLab, *argv: str, expected: str | None = None, rc: int = 0,
         ours_rc: int | None = None, stdin: str | None = None) -> str:
    """Both clients run ``argv``: the same lines (``expected`` if given) and exit codes
    (ours: ``ours_rc`` if given). Returns what they printed."""
    theirs, ours = lab.starlingx(*argv, stdin=stdin), lab.ours(*argv, stdin=stdin)
    assert theirs.returncode == rc, (argv, theirs)
    assert ours.returncode == (rc if ours_rc is None else ours_rc), (argv, ours)
    assert ours.stdout == theirs.stdout, (argv, theirs.stdout, ours.stdout, ours.stderr)
    if expected is not None:
        assert theirs.stdout == expected, (argv, theirs.stdout)
    assert "Traceback" not in theirs.stderr + ours.stderr, (theirs.stderr, ours.stderr)
    return theirs.stdout


def current(lab: PeerLab) -> str | None:
    """The host's Patch Current column (Yes, No, Pending, Failed), None if not listed."""
    row = lab.hosts().get(HOST)
    return row[2] if row else None


def no_dots(text: str) -> str:
    """host-install's dots, one per poll while the host installs: timing, not text."""
    return re.sub(r"^\.*", "", text)


# -- upload, query, show, dependencies ----------------------------------------------------
def test_the_patching_listener_is_where_starlingx_looks(lab):
    assert f"StarlingX patch API (sw-patch) listening on http://127.0.0.1:{PORT}" in \
        lab.server.output()
    wait_until(lambda: current(lab) == "Yes", WAIT, 0.5, f"{HOST} reporting")
    same(lab, "query", expected=(
        "Patch ID  RR  Release  Patch State\n"
        "========  ==  =======  ===========\n"
        "\n"))
    # Ours at the patching listener too: the same API there.
    at_listener = lab.ours("--url", f"http://127.0.0.1:{PORT}", "query-hosts")
    assert at_listener.stdout == lab.starlingx("query-hosts").stdout, at_listener


def test_upload(lab, tmp_path):
    for t in TWINS:
        low = t.lower()
        lab.build(f"{t}_0001", {f"{low}tool": "1.1"}, "--reboot-required", "N",
                  "--summary", "Fix the tool")
        lab.build(f"{t}_0002", {f"{low}tool": "1.2"}, "--reboot-required", "N", "--req",
                  f"{t}_0001", "--summary", "Second fix", "--desc", "First line\nSecond line",
                  "--warn", "Mind the gap", "--inst", "Lock the host first.\nThen install.")
        lab.build(f"{t}_0003", {f"{low}lib": "1.1"}, "--reboot-required", "N")
        lab.build(f"{t}_0004", {f"{low}cfg": "1.1"}, "--reboot-required", "N",
                  "--unremovable")
        lab.build(f"{t}_LOW", {f"{low}tool": "0.9"})
        (lab.work / f"dir-{t}").mkdir()
        for pid in (f"{t}_0003", f"{t}_0004"):
            shutil.move(lab.work / "patches" / f"{pid}.patch", lab.work / f"dir-{t}")
        shutil.copy(lab.work / "patches" / f"{t}_0001.patch", lab.work / f"{t}_BAD.tar")
    patches = lab.work / "patches"
    twins(lab, f"upload {patches}/{{T}}_0001.patch", "{T}_0001 is now available\n\n", 0)
    twins(lab, f"upload {patches}/{{T}}_0002.patch", "{T}_0002 is now available\n\n", 0)
    twins(lab, f"upload {patches}/{{T}}_0001.patch",
          "{T}_0001 is already imported. Updated metadata only\n\n", 0)
    twins(lab, f"upload-dir {lab.work}/dir-{{T}}",
          "{T}_0003 is now available\n{T}_0004 is now available\n\n", 0)
    twins(lab, f"upload {lab.work}/{{T}}_BAD.tar",
          "Error:\nFile must end in .patch extension: {T}_BAD.tar\n\n", 1)
    twins(lab, f"upload {patches}/{{T}}_LOW.patch",
          "Error:\nPatch validation failed for {T}_LOW:\nRPM {t}tool-0.9-1.noarch.rpm in "
          "patch {T}_LOW must be higher version than original (1.0-1)\n\n", 1)
    missing = tmp_path / "NOPE_0001.patch"
    # StarlingX's client complains about a missing file or a directory and exits 0.
    same(lab, "upload", str(missing), expected=f"Error: File does not exist: {missing}\n",
         rc=0, ours_rc=1)
    same(lab, "upload", str(tmp_path),
         expected=f"Error: {tmp_path} is a directory. Please use upload-dir\n", rc=0,
         ours_rc=1)
    (tmp_path / "empty").mkdir()
    same(lab, "upload-dir", str(tmp_path / "empty"), expected="Error:\nNo patches found\n",
         rc=1)


def test_query_and_show(lab):
    rows = "".join(f"{t}_{n}    N     1.0     Available \n" for t in ("O", "R")
                   for n in ("0001", "0002", "0003", "0004"))
    same(lab, "query", expected=(
        "Patch ID  RR  Release  Patch State\n"
        "========  ==  =======  ===========\n" + rows + "\n"))
    same(lab, "query", "available")
    same(lab, "query", "applied", expected=(
        "Patch ID  RR  Release  Patch State\n"
        "========  ==  =======  ===========\n\n"))
    same(lab, "query", "--release", RUNNING)
    same(lab, "query", "all", "--release", "9.9")
    same(lab, "show", "R_0002", expected=(
        "R_0002:\n"
        "    Release:        1.0\n"
        "    Patch State:    Available\n"
        "    Status:         REL\n"
        "    RR:             N\n"
        "    Summary:        Second fix\n"
        "    Description:    First line\n"
        "                    Second line\n"
        "    Install Instructions:\n"
        "                    Lock the host first.\n"
        "                    Then install.\n"
        "    Warnings:       Mind the gap\n"
        "    Requires:\n"
        "                    R_0001\n"
        "    Contents:\n"
        "                    rtool-1.2-1.noarch.rpm\n"
        "\n\n"))
    # An unremovable patch says so; the others have an empty <unremovable/>: no line.
    out = same(lab, "show", "R_0004", "O_0001")
    assert "    Unremovable:    Y\n" in out and out.count("Unremovable") == 1, out
    same(lab, "show", "NOPE_0001", expected="Error:\nNOPE_0001 is unrecognized\n\n", rc=1)
    out = same(lab, "show", "R_0001", "NOPE_0001", rc=1)
    assert out.startswith("R_0001:\n") and out.endswith("Error:\nNOPE_0001 is unrecognized\n\n")
    same(lab, "--debug", "query", "available")
    same(lab, "--debug", "show", "O_0002")


def test_dependencies_and_states(lab):
    same(lab, "what-requires", "R_0001", "O_0003", expected=(
        "R_0001 is required by: R_0002\nO_0003 is not required by any patches.\n\n"))
    # StarlingX's client never sets the exit code of what-requires as root: 0.
    same(lab, "what-requires", "R_0001", "NOPE_0001",
         expected="Error:\nPatch NOPE_0001 does not exist\n\n", rc=0, ours_rc=1)
    same(lab, "query-dependencies", "R_0002", expected="R_0001\nR_0002\n")
    same(lab, "query-dependencies", "--recursive", "O_0002", "R_0003",
         expected="O_0001\nO_0002\nR_0003\n")
    # ... nor shows the error of query-dependencies (ours says it on stderr).
    same(lab, "query-dependencies", "NOPE_0001", expected="", rc=0, ours_rc=1)
    same(lab, "is-available", "R_0001", "O_0002", expected="True\n")
    same(lab, "is-available", "R_0001", "NOPE_0001", expected="False\n", rc=1)
    same(lab, "is-applied", "R_0001", expected="False\n", rc=1)
    same(lab, "completion", "patches")
    same(lab, "completion", "hosts", expected=f"{HOST}\n")


# -- apply, remove, delete, hosts ---------------------------------------------------------
def test_apply_remove_delete(lab):
    twins(lab, "apply {T}_0002", "Error:\n{T}_0001 is required by: {T}_0002\n\n", 1)
    twins(lab, "apply {T}_0001 NOPE_0002 NOPE_0001",
          "Error:\nPatch NOPE_0001 does not exist\nPatch NOPE_0002 does not exist\n\n", 1)
    twins(lab, "apply {T}_0001", "{T}_0001 is now in the repo\n\n", 0)
    twins(lab, "apply {T}_0001", "{T}_0001 is already in the repo\n\n", 0)
    twins(lab, "apply {T}_0004 {T}_0003",
          "{T}_0003 is now in the repo\n{T}_0004 is now in the repo\n\n", 0)
    twins(lab, "remove {T}_0004 {T}_0003", "Error:\nPatch {T}_0004 is not removable\n\n", 1)
    # No dependency between them: in alphabetical order, as StarlingX.
    twins(lab, "remove --removeunremovable {T}_0004 {T}_0003",
          "{T}_0003 has been removed from the repo\n{T}_0004 has been removed from the repo"
          "\n\nWarning:\nUnremovable patch {T}_0004 being removed\n\n", 0)
    twins(lab, "remove {T}_0003", "{T}_0003 is not in the repo\n\n", 0)
    twins(lab, "delete {T}_0001", "Error:\nPatch {T}_0001 not in Available state\n\n", 1)
    twins(lab, "delete {T}_0004", "{T}_0004 has been deleted\n\n", 0)
    twins(lab, "apply {T}_0002", "{T}_0002 is now in the repo\n\n", 0)
    twins(lab, "remove {T}_0001", "Error:\n{T}_0001 is required by: {T}_0002\n\n", 1)


def test_semantic_checks(lab, tmp_path):
    """A pre-apply check that fails: StarlingX's controller raises, its API says "Error: "
    and the check's output."""
    check = tmp_path / "pre-apply"
    check.write_text("#!/bin/sh\necho \"refused: $1 ..., $# arguments\"\nexit 1\n")
    check.chmod(0o755)
    for t in TWINS:
        lab.build(f"{t}_SEM", {f"{t.lower()}cfg": "1.3"}, "--pre-apply", str(check))
    twins(lab, f"upload {lab.work}/patches/{{T}}_SEM.patch", "{T}_SEM is now available\n\n", 0)
    # Its arguments: "-p ID=state" for each of the 8 patches.
    twins(lab, "apply {T}_SEM", "Error:\nError: Semantic check failed for {T}_SEM:\n"
          "refused: -p ..., 16 arguments\n\n", 1)
    twins(lab, "apply --skip-semantic {T}_SEM", "{T}_SEM is now in the repo\n\n", 0)
    twins(lab, "remove {T}_SEM", "{T}_SEM has been removed from the repo\n\n", 0)
    twins(lab, "delete {T}_SEM", "{T}_SEM has been deleted\n\n", 0)


def test_host_install(lab):
    wait_until(lambda: current(lab) == "No", WAIT, 0.5, f"{HOST} out of date after apply")
    out = same(lab, "query")
    assert "R_0002    N     1.0    Partial-Apply\n" in out, out
    twins(lab, f"host-install {HOST}", "\nInstallation was successful.\n", 0, mask=no_dots)
    assert current(lab) == "Yes"
    same(lab, "is-applied", "R_0001", "R_0002", "O_0001", "O_0002", expected="True\n")
    same(lab, "query-hosts", expected=(
        "  Hostname    IP Address  Patch Current  Reboot Required  Release  State\n"
        "============  ==========  =============  ===============  =======  =====\n"
        "controller-0  127.0.0.1        Yes             No           1.0    idle \n"))
    twins(lab, f"host-install --force {HOST}", "\nInstallation was successful.\n", 0,
          mask=no_dots)
    twins(lab, f"host-install-async {HOST}",
          f"Patch installation request sent to {HOST}.\n\n", 0)
    wait_until(lambda: lab.hosts()[HOST][5] == "idle", WAIT, 0.5, f"{HOST} idle again")
    for argv in ("host-install", "host-install-async", "drop-host"):
        same(lab, argv, "nosuchhost", expected="Error:\nUnknown host specified: nosuchhost\n\n",
             rc=1)


# -- commit -------------------------------------------------------------------------------
def test_commit(lab):
    same(lab, "commit", "--release", RUNNING, "R_0001",
         expected="Use of --release option requires --all\n", rc=1)
    same(lab, "commit", "--all", "--release", "9.9",
         expected="There are no 9.9 patches to commit.\n")
    same(lab, "commit", "NOPE_0001", expected=(
        "The following patches will be committed:\n\n"
        "Error:\nNOPE_0001 is unrecognized\n\nAborting...\n"), rc=1)
    same(lab, "commit", "--dry-run", "R_0003", "O_0003", expected=(
        "The following patches will be committed:\n    O_0003\n    R_0003\n\n"
        "Error:\nThe following patches are not applied and cannot be committed:\n"
        "    O_0003\n    R_0003\n\nAborting...\n"), rc=1)
    same(lab, "commit", "--all", "--dry-run", rc=1)
    for t in TWINS:
        lab.build(f"{t}_DEV", {f"{t.lower()}lib": "1.5"}, "--status", "DEV")
        assert lab.ours("upload", lab.work / "patches" / f"{t}_DEV.patch").returncode == 0
    same(lab, "commit", "--dry-run", "R_0001", expected=(
        "The following patches will be committed:\n    R_0001\n\n"
        "Error:\nA commit cannot be performed with non-REL status patches in the system:\n"
        "    O_DEV\n    R_DEV\n\nAborting...\n"), rc=1)
    twins(lab, "delete {T}_DEV", "{T}_DEV has been deleted\n\n", 0)
    freed = re.compile(r"would free \d+\.\d\d MiB")
    listing = ("The following patches will be committed:\n    {T}_0001\n    {T}_0002\n\n"
               "This commit operation would free X MiB\n")
    mib = lambda text: freed.sub("would free X MiB", text)   # noqa: E731 - the sizes of twins
    twins(lab, "commit --dry-run {T}_0002", listing, 0, mask=mib)
    warning = ("\nWARNING: Committing a patch is an irreversible operation. Committed\n"
               "         patches cannot be removed.\n\nWould you like to continue? [y/N]: ")
    twins(lab, "commit {T}_0002", listing + warning + "Aborting...\n", 1, stdin="n\n",
          mask=mib)
    twins(lab, "commit {T}_0002", listing + warning + "The patches have been committed.\n",
          0, stdin="y\n", mask=mib)
    out = same(lab, "query", "committed")
    assert "R_0001    N     1.0     Committed \n" in out, out
    twins(lab, "remove {T}_0001",
          "Error:\nPatch {T}_0001 is committed and cannot be removed\n\n", 1)
    twins(lab, f"upload {lab.work}/patches/{{T}}_0001.patch",
          "{T}_0001 is committed. Metadata not updated\n\n", 0)


# -- applications, releases, hosts again ---------------------------------------------------
def test_application_dependencies(lab):
    same(lab, "query-app-dependencies", expected="There are no application dependencies.\n")
    twins(lab, "report-app-dependencies --app app-{t} {T}_0003 NEW_{T}", "", 0)
    same(lab, "query-app-dependencies", expected=(
        "Application  Required Patches\n"
        "===========  ================\n"
        "app-o        O_0003, NEW_O   \n"
        "app-r        R_0003, NEW_R   \n"))
    twins(lab, "apply {T}_0003", "{T}_0003 is now in the repo\n\n", 0)
    twins(lab, "remove {T}_0003",
          "Error:\n{T}_0003 is required by application(s): app-{t}\n\n", 1)
    twins(lab, "remove --skipappcheck {T}_0003", "{T}_0003 has been removed from the repo\n\n",
          0)
    twins(lab, "report-app-dependencies --app app-{t}", "", 0)
    same(lab, "query-app-dependencies", expected="There are no application dependencies.\n")
    # Nothing left to apply for the second: each says what it did.
    applied = lab.starlingx("apply", "--all")
    assert (applied.returncode, applied.stdout) == (
        0, "O_0003 is now in the repo\nR_0003 is now in the repo\n\n"), applied
    applied = lab.ours("apply", "--all")
    assert (applied.returncode, applied.stdout) == (
        0, "There are no available patches to be applied.\n\n"), applied


def test_releases(lab):
    twins(lab, "init-release 2.{t}", "", 0)
    twins(lab, "init-release 2.{t}", "Patch repository for 2.{t} already exists\n\n", 0)
    twins(lab, "del-release 2.{t}", "", 0)
    twins(lab, "del-release 2.{t}", "Patch repository for 2.{t} does not exist\n\n", 0)
    same(lab, "init-release", RUNNING,
         expected=f"Error:\nRejected: Requested release {RUNNING} is running release\n\n",
         rc=1)


def test_drop_host(lab):
    for run in (lab.starlingx, lab.ours):
        wait_until(lambda: current(lab) is not None, WAIT, 0.5, f"{HOST} listed")
        dropped = run("drop-host", HOST)
        assert (dropped.returncode, dropped.stdout) == (0, ""), dropped
        # Its agent reports again at its next heartbeat: listed again, as StarlingX's.
