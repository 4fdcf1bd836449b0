"""The host side of in-service patching: report, install, boot-time and ramdisk installs.

One ``PatchEngine`` per root. Its methods return plain dicts, so the code that
talks to the conductor (heartbeats, install commands) only forwards them:
``report()`` is the detailed query of specs/starlingx-patching.md §4.2 in the
shape of ``conductor.patching.hosts.HostReport``, ``install()`` the install
request (§4.4-4.6), ``boot_install()`` the init-time install with its
one-reboot guard, ``install_into_root()`` the ramdisk's install into a freshly
written root. State lives in memory plus StarlingX's flag files (``flags.py``).
"""
from __future__ import annotations

import dataclasses
import logging
import shutil
import socket
import threading
import time
from pathlib import Path

from ramdisk_agent.errors import MetadataUnsupported, PatchEngineError
from ramdisk_agent.host import plan as planning
from ramdisk_agent.host import repodata
from ramdisk_agent.host.dnf import Repos, RpmDnf
from ramdisk_agent.host.flags import HostFiles

LOG = logging.getLogger(__name__)
REJECT_SECONDS = 60.0      # install-rejected reverts to idle after this (§2.3)
PATCH_LOG = "var/log/patching.log"
REJECT_REASON = "Host is not locked: lock it or force the install"
DUPLICATES = "Duplicate packages installed: manual recovery required"


@dataclasses.dataclass
class Outcome:
    """What one transaction did."""

    ok: bool
    plan: planning.Plan
    error: str = ""
    undone: bool = False

    def to_dict(self) -> dict:
        return {"changed": self.plan.changes, **self.plan.summary(),
                "error": self.error, "undone": self.undone}


class PatchEngine:
    """Patching of one root: ``/`` on an installed host, a mount point in the ramdisk."""

    def __init__(self, root: Path | str = "/", dbpath: str = "/var/lib/rpm", *,
                 base_repo_url: str, updates_repo_url: str | None = None,
                 sw_version: str, nodetype: str = "controller",
                 subfunctions: list[str] | None = None, run_dir: Path | str | None = None,
                 cache_dir: Path | str | None = None, hostname: str | None = None,
                 ip: str = "", clock=time.monotonic):
        self.root = Path(root).resolve()
        self.dbpath, self.sw_version, self.nodetype = dbpath, sw_version, nodetype
        self.subfunctions = list(subfunctions or [nodetype])
        self.repos = Repos(base_repo_url, updates_repo_url)
        self.files = HostFiles(self.root, Path(run_dir) if run_dir else self.root / "run")
        self.cache_dir = Path(cache_dir) if cache_dir else \
            self.root / "var/cache/metalcast-patching"
        self.tools = RpmDnf(self.root, dbpath, sw_version, self.cache_dir, self.repos)
        self.hostname = hostname or _hostname(self.root)
        self.ip, self._clock = ip, clock
        self._lock = threading.Lock()
        self._state, self._rejected_at = "idle", 0.0
        if self.files.is_set("patch_installing"):
            # The agent restarted in the middle of an install (§2.3): that install failed.
            LOG.warning("Host %s: an install was interrupted; marking it failed", self.hostname)
            self.files.set("patch_install_failed")
            self.files.clear("patch_installing")
            self._state = "install-failed"

    # -- state ---------------------------------------------------------------------
    @property
    def group_id(self) -> str:
        return "updates-" + "-".join(self.subfunctions)

    @property
    def state(self) -> str:
        """idle, installing, install-failed or install-rejected (which reverts to idle
        after 60 s or as soon as the node is locked, §2.3)."""
        if self._state == "install-rejected" and (
                self._clock() - self._rejected_at >= REJECT_SECONDS
                or self.files.is_set("node_locked")):
            self._state = "idle"
        return self._state

    def query(self) -> planning.Plan:
        """What this root must change to match the repos and its comps group.

        Reads the repos' metadata directly: a report is sent on every heartbeat and
        ``dnf repoquery`` alone costs ~15x the whole report (bench/host_patching.py). dnf
        reads the same files, so both views agree (the functional tests check it);
        dnf's own view is used when the metadata compression needs it (zstd).
        """
        return self._plan(self.tools.installed(), self._available())

    def _available(self) -> list[planning.Package]:
        try:
            return [pkg for url in self.repos.urls() for pkg in repodata.packages(url)]
        except MetadataUnsupported:
            return self.tools.available()

    def _plan(self, installed, available) -> planning.Plan:
        group: list[str] = []
        for url in self.repos.urls():
            group += repodata.group_packages(url, self.group_id)
        return planning.compute(installed, available, group)

    def report(self) -> dict:
        """The detailed query (§4.2 QUERY_DETAILED_RESP + HELLO_AGENT_ACK fields)."""
        plan = self.query()
        return {
            "hostname": self.hostname, "ip": self.ip, "nodetype": self.nodetype,
            "subfunctions": list(self.subfunctions), "sw_version": self.sw_version,
            "out_of_date": plan.changes, "installed": plan.installed_report(),
            "to_remove": [pkg.name for pkg in plan.erase],
            "missing_pkgs": list(plan.missing), "duplicated_pkgs": plan.duplicated,
            "state": self.state, "node_is_patched": self.files.is_set("node_is_patched"),
            "patch_failed": self.files.is_set("patch_install_failed")}

    # -- install ---------------------------------------------------------------------
    def install(self, force: bool = False, locked: bool | None = None) -> dict:
        """Install request (§4.2 AGENT_INSTALL_REQ): ``{"status": bool, ...}``.

        ``locked`` defaults to the ``.node_locked`` flag maintenance keeps.
        """
        if locked is None:
            locked = self.files.is_set("node_locked")
        if not locked and not force:
            LOG.info("Host %s: install rejected: not locked and not forced", self.hostname)
            self._state, self._rejected_at = "install-rejected", self._clock()
            return {"status": False, "reject_reason": REJECT_REASON, "state": self._state}
        return self._install(init=False)

    def _install(self, init: bool) -> dict:
        if not self._lock.acquire(blocking=False):
            return {"status": False, "reject_reason": "An install is already running",
                    "state": self.state}
        try:
            self._state = "installing"
            self.files.clear("patch_install_failed")
            self.files.set("patch_installing")
            try:
                outcome = self.transact(restart=True)
            except PatchEngineError as exc:
                outcome = Outcome(False, planning.Plan(), str(exc))
            finally:
                self.files.clear("patch_installing")
            return self._finish(outcome, init)
        finally:
            self._lock.release()

    def _finish(self, outcome: Outcome, init: bool) -> dict:
        """Flags and restart scripts after a transaction (§4.5)."""
        failed = not outcome.ok
        if outcome.ok and outcome.plan.changes:
            self.files.set("node_is_patched")
            if init:
                self.files.set("node_is_patched_rr")
            if not self.files.is_set("node_is_patched_rr"):
                failures = self.files.run_scripts()
                if failures:
                    failed = True
                    outcome.error = f"{failures} restart script(s) failed; " \
                                    f"see {self.files.script_log}"
                else:
                    self.files.clear("node_is_patched")
        if failed:
            self.files.set("patch_install_failed")
        self._state = "install-failed" if failed else "idle"
        LOG.info("Host %s: install %s %s", self.hostname,
                 "failed:" if failed else "done", outcome.error or outcome.plan.summary())
        return {"status": not failed, "state": self._state, **outcome.to_dict(),
                "requires_reboot": self.files.is_set("node_is_patched"),
                "patch_failed": failed,
                # the caller restarts the agent once idle (self-patching, §4.5)
                "restart_agent": self.files.take_restart_request()}

    def transact(self, restart: bool = True, forward_only: bool = False) -> Outcome:
        """Plan and run one dnf transaction; undo it once if any item did not happen.

        Raises PatchEngineError when rpm, dnf or a repo cannot even be queried.
        """
        installed, available = self.tools.installed(), self._available()
        plan = self._plan(installed, available)
        if forward_only:
            plan = plan.forward_only()
        if plan.duplicated:
            return Outcome(False, plan, f"{DUPLICATES}: {plan.duplicated}")
        if not plan.changes:
            return Outcome(True, plan)
        if restart:
            self.files.reset_script_dirs()
        log = self.root / PATCH_LOG
        result = self.tools.transaction(plan.commands(), log)
        after = self.tools.installed()
        left = self._plan(after, available)
        left = left.forward_only() if forward_only else left
        if result.ok and not left.changes and not left.duplicated:
            return Outcome(True, plan)
        error = f"dnf transaction failed; see {log}"
        undone = False
        if set(after) != set(installed):
            # Something was done, so dnf recorded this transaction: undo it, once.
            undone = self.tools.undo_last(log).ok
            error += "; undone" if undone else "; undo failed too"
        return Outcome(False, plan, error, undone)

    # -- boot and ramdisk ---------------------------------------------------------------
    def boot_install(self) -> dict:
        """Init-time install (§4.6): ``{"reboot": bool, ...}``, at most one reboot in a row."""
        if self.files.is_set("patch_install_failed"):
            return {"reboot": False, "status": False,
                    "error": "a previous install failed; not installing at boot"}
        result = self._install(init=True)
        guard = self.files.init_guard
        if not self.files.is_set("node_is_patched_rr"):
            guard.unlink(missing_ok=True)
            return {"reboot": False, **result}
        if guard.exists():
            # Patched during init twice in a row: do not reboot-loop, mark the failure.
            guard.unlink()
            self.files.set("patch_install_failed")
            return {"reboot": False, **result, "status": False,
                    "error": "patches installed at boot again after a reboot: not rebooting"}
        guard.parent.mkdir(parents=True, exist_ok=True)
        guard.touch()
        return {"reboot": True, **result}

    def install_into_root(self, mountpoint: Path | str) -> dict:
        """Bring a freshly written root up to the Applied patches (upgrades and group
        installs only; no restart scripts, no flags) before its first boot."""
        target = PatchEngine(mountpoint, self.dbpath, base_repo_url=self.repos.base,
                             updates_repo_url=self.repos.updates, sw_version=self.sw_version,
                             nodetype=self.nodetype, subfunctions=self.subfunctions,
                             cache_dir=self.cache_dir / "installroot",
                             hostname=self.hostname)
        try:
            outcome = target.transact(restart=False, forward_only=True)
        finally:
            target.tools.remove_stray_cache()
            # Scriptlets ran chrooted and may have left /run flags in the image; /run
            # is a tmpfs at boot, so remove them rather than leave hidden files behind.
            shutil.rmtree(target.files.run_dir / "patching", ignore_errors=True)
            for name in ("node_is_patched_rr", "node_is_patched"):
                target.files.clear(name)
        if not outcome.ok:
            raise PatchEngineError(f"installing patches into {mountpoint} failed: "
                                   f"{outcome.error}")
        return {"status": True, **outcome.to_dict()}


def _hostname(root: Path) -> str:
    try:
        name = (root / "etc/hostname").read_text().strip()
    except OSError:
        name = ""
    return name or socket.gethostname()
