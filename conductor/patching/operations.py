"""Apply, remove, delete, commit and application dependencies (spec §5).

A mixin of PatchController, split out to keep each module to one purpose: this
one changes repo states and the update repository; controller.py imports,
queries and orders.
"""
from __future__ import annotations

import logging
import os
import subprocess
import threading
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from conductor import request_ids
from conductor.errors import InsufficientStorage, PatchOpError, is_disk_full
from conductor.patching import repo
from conductor.patching.metadata import check_name
from conductor.patching.results import Result
from conductor.patching.store import PatchStore, RepoState
from ramdisk_agent.wire.rpmver import label_compare

if TYPE_CHECKING:
    from conductor.patching.host_states import HostStates

LOG = logging.getLogger(__name__)
INSTALLING = "Rejected: One or more nodes are installing patches."


def _refuse(lines: list[str]) -> None:
    """Refuse with every line at once, as StarlingX lists each offending patch."""
    if lines:
        raise PatchOpError("\n".join(lines))


class PatchOperations:
    """Mutating operations; every one returns a Result and never raises for the user."""

    # What the mixin uses of PatchController (which sets and defines these).
    store: PatchStore
    hosts: HostStates
    channel: Any                    # controller.HostChannel | None
    lock: threading.RLock
    patches: dict[str, Any]         # patch ID -> controller.Patch
    running_release: str
    semantic_timeout: float

    def _changed(self) -> None: raise NotImplementedError
    def patch_state(self, patch_id: str) -> str: raise NotImplementedError
    def refresh_alarms(self) -> None: raise NotImplementedError
    def dependency_order(self, ids: list[str]) -> list[str]: raise NotImplementedError
    def removal_order(self, ids: list[str]) -> list[str]: raise NotImplementedError
    def query_dependencies(self, ids: list[str],
                           recursive: bool = False) -> dict: raise NotImplementedError

    def _run(self, func, *args, prefix: str = "Error: ") -> Result:
        """Run ``func(result, *args)`` as StarlingX's API runs an operation: a refusal
        (PatchOpError, its lines) ends in a newline, as the messages StarlingX's
        controller returns; a failure (repo.PatchingError: a tool, a semantic check)
        is ``prefix`` + its text without one, as its API renders an exception
        ("Error: ..." for most operations, the bare text for commit and releases)."""
        result = Result()
        with self.lock:
            try:
                self.hosts.sync()       # the hosts as every conductor recorded them
                func(result, *args)
            except (PatchOpError, InsufficientStorage) as exc:
                result.add("error", str(exc))
            except repo.PatchingError as exc:
                result.error += f"{prefix}{exc}"
            except OSError as exc:      # a full disk is the operator's to fix: say so
                if not is_disk_full(exc):
                    raise
                result.add("error", str(InsufficientStorage(path=self._full_root(exc))))
            finally:
                self._changed()
        if self.channel is not None:    # hosts re-report now (StarlingX's HELLO_AGENT)
            self.channel.notify_all()
        return result

    def _full_root(self, exc: OSError) -> str:
        """Which tree a write found full: the web root (update repos) or the store."""
        where = str(exc.filename or "")
        web = str(self.store.web_root)
        return web if where.startswith(web + os.sep) else str(self.store.root)

    def _installing(self, result: Result) -> bool:
        """StarlingX's API refuses apply and remove while a host installs (its text has
        no newline: the API, not the controller, says it)."""
        if self.hosts.installing():
            result.error += INSTALLING
            return True
        return False

    def _refuse_unknown(self, ids: list[str]) -> None:
        """"Patch X does not exist", one line per unknown ID, before anything is done."""
        _refuse([f"Patch {pid} does not exist" for pid in ids if pid not in self.patches])

    # -- apply (§5.1) -------------------------------------------------------------------
    def apply(self, ids: list[str], skip_semantic: bool = False):
        return self._run(self._apply, ids, skip_semantic)

    def _apply(self, result, ids, skip_semantic) -> None:
        if self._installing(result):
            return
        if "--all" in ids:
            ids = [pid for pid, p in self.patches.items() if p.repostate is RepoState.AVAILABLE]
            if not ids:
                result.add("info", "There are no available patches to be applied.")
                return
        ids = sorted(set(ids))
        self._refuse_unknown(ids)
        _refuse([f"{pid} cannot be applied in an upgrade" for pid in ids
                 if self.patches[pid].meta.apply_active_release_only == "Y" and
                 self.patches[pid].meta.sw_version != self.running_release])
        self._check_requires(ids)
        if not skip_semantic:
            self._semantic_checks("pre-apply", ids)
        order = self.dependency_order(ids)
        todo = [pid for pid in order if self.patches[pid].repostate is RepoState.AVAILABLE]
        self._publish(todo, add=True)
        self._set_repostate(todo, RepoState.AVAILABLE, RepoState.APPLIED)
        for pid in order:  # in the order applied; StarlingX's is alphabetical
            result.add("info", f"{pid} is now in the repo" if pid in todo
                       else f"{pid} is already in the repo")

    def _set_repostate(self, ids, old: RepoState, new: RepoState) -> None:
        """Move each patch's metadata old -> new; its hosts are Pending until they report."""
        for pid in ids:
            self.store.move(pid, old, new)
            self.patches[pid].repostate = new
            LOG.info("Patch %s: %s -> %s", pid, old.value, new.value)
        if ids:
            self.hosts.mark_interim(ids)

    def _check_requires(self, ids: list[str]) -> None:
        missing: dict[str, list[str]] = {}
        for pid in ids:
            for req in self.patches[pid].meta.requires:
                ok = req in ids or (req in self.patches and self.patches[req].repostate in
                                    (RepoState.APPLIED, RepoState.COMMITTED))
                if not ok:
                    missing.setdefault(req, []).append(pid)
        if missing:
            raise PatchOpError("\n".join(f"{req} is required by: {', '.join(sorted(users))}"
                                      for req, users in sorted(missing.items())))

    def _publish(self, ids: list[str], add: bool) -> None:
        """Add (or remove) the RPMs of ``ids`` to (from) the update repos, regenerate."""
        if not ids:
            return
        changed: list[tuple] = []
        try:
            for pid in ids:
                meta = self.patches[pid].meta
                update = repo.UpdateRepo(self.store.repo_dir(meta.sw_version))
                for rpm in meta.rpms:
                    if add:
                        update.add(rpm.arch, self.store.package_path(meta.sw_version,
                                                                     rpm.file_basename))
                    else:
                        update.remove(rpm.arch, rpm.file_basename)
                    changed.append((update, rpm))
            self._regenerate({self.patches[pid].meta.sw_version for pid in ids},
                             extra=ids if add else [], without=[] if add else ids)
        except (OSError, repo.PatchingError, InsufficientStorage):
            for update, rpm in changed:  # put the repo back as it was
                if add:
                    update.remove(rpm.arch, rpm.file_basename)
            raise

    def _regenerate(self, releases: set[str], extra=(), without=()) -> None:
        for release in sorted(releases):
            groups: dict[str, list[str]] = {}
            for pid, patch in self.patches.items():
                published = patch.repostate is not RepoState.AVAILABLE or pid in extra
                if patch.meta.sw_version == release and published and pid not in without:
                    for personality, packages in patch.meta.personalities.items():
                        groups.setdefault(personality, []).extend(packages)
            repo.UpdateRepo(self.store.repo_dir(release)).regenerate(groups)

    def _semantic_checks(self, action: str, ids: list[str]) -> None:
        states = [f"{pid}={self.patch_state(pid)}" for pid in sorted(self.patches)]
        for pid in ids:
            script = self.store.semantic_path(action, pid)
            if not script.exists():
                continue
            argv = [str(script)] + [arg for state in states for arg in ("-p", state)]
            try:
                proc = subprocess.run(argv, capture_output=True, text=True,
                                      timeout=self.semantic_timeout)
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise repo.PatchingError(
                    reason=f"Semantic check failed for {pid}:\n{exc}") from None
            if proc.returncode != 0:  # StarlingX: its PatchFail, "Error: " and the output
                raise repo.PatchingError(reason=f"Semantic check failed for {pid}:\n"
                                                f"{proc.stdout + proc.stderr}")

    # -- remove (§5.2) ------------------------------------------------------------------
    def remove(self, ids: list[str], skip_semantic: bool = False, skip_app_check: bool = False,
               remove_unremovable: bool = False):
        return self._run(self._remove, ids, skip_semantic, skip_app_check, remove_unremovable)

    def _remove(self, result, ids, skip_semantic, skip_app_check, remove_unremovable) -> None:
        if self._installing(result):
            return
        ids = sorted(set(ids))
        self._refuse_unknown(ids)
        _refuse(self._unremovable(ids, remove_unremovable))
        for pid in ids:
            if self.patches[pid].meta.unremovable == "Y":
                result.add("warning", f"Unremovable patch {pid} being removed")
        self._check_reverse_requires(ids)
        if not skip_app_check:
            self._check_apps(ids)
        if not skip_semantic:
            self._semantic_checks("pre-remove", ids)
        order = self.removal_order(ids)
        todo = [pid for pid in order if self.patches[pid].repostate is not RepoState.AVAILABLE]
        self._publish(todo, add=False)
        self._set_repostate(todo, RepoState.APPLIED, RepoState.AVAILABLE)
        for pid in order:
            result.add("info", f"{pid} has been removed from the repo" if pid in todo
                       else f"{pid} is not in the repo")

    def _unremovable(self, ids: list[str], remove_unremovable: bool) -> list[str]:
        """StarlingX's refusals; a committed patch stays put even when its unremovable
        flag is overridden (StarlingX's would then remove a committed patch)."""
        lines = []
        for pid in ids:
            patch = self.patches[pid]
            if patch.meta.unremovable == "Y" and not remove_unremovable:
                lines.append(f"Patch {pid} is not removable")
            elif patch.repostate is RepoState.COMMITTED:
                lines.append(f"Patch {pid} is committed and cannot be removed")
        return lines

    def _check_reverse_requires(self, ids: list[str]) -> None:
        users: dict[str, list[str]] = {}
        for other, patch in self.patches.items():
            if other in ids or patch.repostate is RepoState.AVAILABLE:
                continue
            for req in patch.meta.requires:
                if req in ids:
                    users.setdefault(req, []).append(other)
        if users:
            raise PatchOpError("\n".join(f"{pid} is required by: {', '.join(sorted(u))}"
                                      for pid, u in sorted(users.items())))

    def _check_apps(self, ids: list[str]) -> None:
        deps = self.store.app_dependencies()
        users = {pid: sorted(app for app, patches in deps.items() if pid in patches)
                 for pid in ids}
        _refuse([f"{pid} is required by application(s): {', '.join(apps)}"
                 for pid, apps in users.items() if apps])

    # -- delete (§5.3, plus a reverse-dependency check) --------------------------------
    def delete(self, ids: list[str]):
        return self._run(self._delete, ids)

    def _delete(self, result, ids) -> None:
        ids = sorted(set(ids))
        _refuse([f"Patch {pid} does not exist" if pid not in self.patches else
                 f"Patch {pid} not in Available state" for pid in ids
                 if pid not in self.patches or
                 self.patches[pid].repostate is not RepoState.AVAILABLE or
                 self.patch_state(pid) not in ("Available", "n/a")])
        users = {pid: sorted(o for o, p in self.patches.items()
                             if pid in p.meta.requires and o not in ids) for pid in ids}
        blocked = {pid: u for pid, u in users.items() if u}
        if blocked:  # StarlingX deletes anyway; a dangling "requires" helps nobody
            raise PatchOpError("\n".join(f"{pid} is required by: {', '.join(u)}"
                                      for pid, u in sorted(blocked.items())))
        for pid in ids:
            meta = self.patches.pop(pid).meta
            for rpm in meta.rpms:
                self.store.package_path(meta.sw_version, rpm.file_basename).unlink(
                    missing_ok=True)
            self.store.delete_semantics(pid)
            self.store.remove_metadata(pid, RepoState.AVAILABLE)
            result.add("info", f"{pid} has been deleted")

    # -- commit (§5.4) ------------------------------------------------------------------
    def commit(self, ids: list[str], dry_run: bool = False):
        return self._run(self._commit, ids, dry_run, prefix="")

    def _commit(self, result, ids, dry_run) -> None:
        # StarlingX's texts: its listed lines end in newlines, the info lines do not.
        not_rel = sorted(pid for pid, p in self.patches.items() if p.meta.status != "REL")
        if not_rel:
            result.error = "A commit cannot be performed with non-REL status patches in " \
                "the system:\n" + "".join(f"    {pid}\n" for pid in not_rel)
            return
        unknown = sorted(pid for pid in set(ids) if pid not in self.patches)
        if unknown:
            result.error = "".join(f"{pid} is unrecognized\n" for pid in unknown)
            return
        closure = self.query_dependencies(ids, recursive=True)["patches"]
        unapplied = [pid for pid in closure
                     if self.patch_state(pid) not in ("Applied", "Committed")]
        if unapplied:
            result.error = "The following patches are not applied and cannot be " \
                "committed:\n" + "".join(f"    {pid}\n" for pid in unapplied)
            return
        obsolete = self._superseded(closure)
        freed = sum(path.stat().st_size for path, _ in obsolete if path.exists())
        if dry_run:
            result.info = f"This commit operation would free {freed / 2**20:.2f} MiB"
            return
        for path, repo_path in obsolete:
            path.unlink(missing_ok=True)
            repo_path.unlink(missing_ok=True)
        for pid in closure:
            if self.patches[pid].repostate is RepoState.APPLIED:
                self.store.move(pid, RepoState.APPLIED, RepoState.COMMITTED)
                self.patches[pid].repostate = RepoState.COMMITTED
        self._regenerate({self.patches[pid].meta.sw_version for pid in closure})
        LOG.info("Committed %s: %.2f MiB freed", ", ".join(closure), freed / 2**20)
        result.info = "The patches have been committed."

    def _superseded(self, closure: list[str]) -> list[tuple]:
        """(store path, repo path) of every RPM a higher version in ``closure`` replaces."""
        best: dict[tuple, tuple] = {}
        for pid in closure:
            meta = self.patches[pid].meta
            for rpm in meta.rpms:
                key = (meta.sw_version, rpm.name, rpm.arch)
                if key not in best or label_compare(rpm.evr, best[key][0].evr) > 0:
                    best[key] = (rpm, meta.sw_version)
        doomed = []
        for pid in closure:
            meta = self.patches[pid].meta
            for rpm in meta.rpms:
                keep, _ = best[(meta.sw_version, rpm.name, rpm.arch)]
                if keep.filename != rpm.filename:
                    update = repo.UpdateRepo(self.store.repo_dir(meta.sw_version))
                    doomed.append((self.store.package_path(meta.sw_version, rpm.file_basename),
                                   update.package_path(rpm.arch, rpm.file_basename)))
        return doomed

    # -- application dependencies (§5.6) and hosts ------------------------------------
    def report_app_dependencies(self, app: str, ids: list[str]) -> bool:
        """True once recorded. IDs of patches not (yet) uploaded are recorded too, as
        StarlingX does: sysinv reports what an application needs, and the patch it
        names then cannot be removed once it is there."""
        for pid in ids:  # they are stored, not looked up: only their shape is checked
            check_name("patch ID", pid)
        with self.lock:
            deps = self.store.app_dependencies()
            if ids:
                deps[app] = list(dict.fromkeys(ids))   # as reported, each once
            else:
                deps.pop(app, None)
            self.store.save_app_dependencies(deps)
            return True

    def query_app_dependencies(self) -> dict[str, list[str]]:
        return self.store.app_dependencies()

    def query_hosts(self) -> list[dict]:
        with self.lock:
            self.hosts.sync()
            return self.hosts.views()

    def host_summaries(self, names: Iterable[str] | None = None) -> list[dict]:
        """query_hosts of ``names`` (every host: None) without their package lists:
        what a strategy step polls (conductor/orchestration/fleet.py)."""
        with self.lock:
            self.hosts.sync()
            return self.hosts.views(names, packages=False)

    def host_install_async(self, host: str, force: bool = False) -> Result:
        """Ask ``host``'s agent to install; forced while no reboot-required patch is
        partial. The host shows ``installing`` until the report that answers it."""
        result = Result()
        with self.lock:
            self.hosts.sync()
            name = self.hosts.find(host) if host else None
            force = force or self.hosts.allow_insvc_patching()
            # The API request's ID when a request asked (conductor/request_ids.py): the
            # host's answering report and every log line of the install name it.
            request_id = request_ids.current() or uuid.uuid4().hex
            if name is not None and self.channel is not None:
                previous = self.hosts.start_install(name, request_id)
        if not host:
            result.add("error", "Host must be specified for install")
        elif name is None:
            result.add("error", f"Unknown host specified: {host}")
        elif self.channel is None:
            result.add("error", "No host agent channel is configured on this conductor")
        else:
            try:   # outside the lock: reports keep arriving while the agent is reached
                self.channel.install(name, force, request_id)
            except Exception as exc:  # noqa: BLE001 - any transport failure is the user's error text
                with self.lock:
                    self.hosts.abort_install(name, request_id, previous)
                result.add("error", f"Failed to send the installation request to {name}: {exc}")
            else:
                result.add("info", f"Patch installation request sent to {name}.")
        return result

    def drop_host(self, host: str) -> Result:
        with self.lock:
            self.hosts.sync()
            name = self.hosts.find(host)
            result = Result()
            if name is None:
                result.add("error", f"Unknown host specified: {host}")
            else:
                self.hosts.drop(name)
                self.refresh_alarms()
                LOG.info("Host %s dropped from the patching host list", name)
            return result  # StarlingX's answer to a drop is empty: sw-patch prints nothing
