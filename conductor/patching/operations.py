"""Apply, remove, delete, commit and application dependencies (spec §5).

A mixin of PatchController, split out to keep each module to one purpose: this
one changes repo states and the update repository; controller.py imports,
queries and orders.
"""
from __future__ import annotations

import logging
import subprocess
import threading
import uuid
from typing import TYPE_CHECKING, Any

from conductor.errors import PatchOpError
from conductor.patching import repo
from conductor.patching.results import Result
from conductor.patching.store import PatchStore, RepoState
from ramdisk_agent.wire.rpmver import label_compare

if TYPE_CHECKING:
    from conductor.patching.host_states import HostStates

LOG = logging.getLogger(__name__)


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

    def _get(self, patch_id: str) -> Any: raise NotImplementedError
    def _changed(self) -> None: raise NotImplementedError
    def patch_state(self, patch_id: str) -> str: raise NotImplementedError
    def refresh_alarms(self) -> None: raise NotImplementedError
    def dependency_order(self, ids: list[str]) -> list[str]: raise NotImplementedError
    def query_dependencies(self, ids: list[str],
                           recursive: bool = False) -> dict: raise NotImplementedError

    def _run(self, func, *args) -> Result:
        result = Result()
        with self.lock:
            try:
                self.hosts.sync()       # the hosts as every conductor recorded them
                func(result, *args)
            except (PatchOpError, repo.PatchingError) as exc:
                result.add("error", str(exc))
            finally:
                self._changed()
        if self.channel is not None:    # hosts re-report now (StarlingX's HELLO_AGENT)
            self.channel.notify_all()
        return result

    def _refuse_while_installing(self) -> None:
        if self.hosts.installing():
            raise PatchOpError("Rejected: One or more nodes are installing patches.")

    # -- apply (§5.1) -------------------------------------------------------------------
    def apply(self, ids: list[str], skip_semantic: bool = False):
        return self._run(self._apply, ids, skip_semantic)

    def _apply(self, result, ids, skip_semantic) -> None:
        self._refuse_while_installing()
        if "--all" in ids:
            ids = [pid for pid, p in self.patches.items() if p.repostate is RepoState.AVAILABLE]
            if not ids:
                result.add("info", "There are no available patches to be applied.")
                return
        ids = sorted(set(ids))
        for pid in ids:
            patch = self._get(pid)
            if patch.meta.apply_active_release_only == "Y" and \
                    patch.meta.sw_version != self.running_release:
                raise PatchOpError(f"{pid} cannot be applied in an upgrade")
        self._check_requires(ids)
        if not skip_semantic:
            self._semantic_checks("pre-apply", ids)
        todo = [pid for pid in self.dependency_order(ids)
                if self.patches[pid].repostate is RepoState.AVAILABLE]
        self._publish(todo, add=True)
        self._set_repostate(todo, RepoState.AVAILABLE, RepoState.APPLIED, result,
                            "{} is now in the repo")

    def _set_repostate(self, ids, old: RepoState, new: RepoState, result, info: str) -> None:
        """Move each patch's metadata old -> new; its hosts are Pending until they report."""
        for pid in ids:
            self.store.move(pid, old, new)
            self.patches[pid].repostate = new
            result.add("info", info.format(pid))
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
        except (OSError, repo.PatchingError):
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
                raise PatchOpError(f"Semantic check failed for {pid}:\n{exc}") from None
            if proc.returncode != 0:
                raise PatchOpError(f"Semantic check failed for {pid}:\n"
                                f"{(proc.stdout + proc.stderr).strip()}")

    # -- remove (§5.2) ------------------------------------------------------------------
    def remove(self, ids: list[str], skip_semantic: bool = False, skip_app_check: bool = False,
               remove_unremovable: bool = False):
        return self._run(self._remove, ids, skip_semantic, skip_app_check, remove_unremovable)

    def _remove(self, result, ids, skip_semantic, skip_app_check, remove_unremovable) -> None:
        self._refuse_while_installing()
        ids = sorted(set(ids))
        for pid in ids:
            patch = self._get(pid)
            if patch.repostate is RepoState.COMMITTED:
                raise PatchOpError(f"Patch {pid} is committed and cannot be removed")
            if patch.meta.unremovable == "Y":
                if not remove_unremovable:
                    raise PatchOpError(f"Patch {pid} is not removable")
                result.add("warning", f"Patch {pid} is not removable")
        self._check_reverse_requires(ids)
        if not skip_app_check:
            self._check_apps(ids)
        if not skip_semantic:
            self._semantic_checks("pre-remove", ids)
        todo = []
        for pid in reversed(self.dependency_order(ids)):
            if self.patches[pid].repostate is RepoState.AVAILABLE:
                result.add("info", f"{pid} is not in the repo")
            else:
                todo.append(pid)
        self._publish(todo, add=False)
        self._set_repostate(todo, RepoState.APPLIED, RepoState.AVAILABLE, result,
                            "{} has been removed from the repo")

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
        for pid in ids:
            apps = sorted(app for app, patches in deps.items() if pid in patches)
            if apps:
                raise PatchOpError(f"{pid} is required by application(s): {', '.join(apps)}")

    # -- delete (§5.3, plus a reverse-dependency check) --------------------------------
    def delete(self, ids: list[str]):
        return self._run(self._delete, ids)

    def _delete(self, result, ids) -> None:
        ids = sorted(set(ids))
        for pid in ids:
            patch = self._get(pid)
            if patch.repostate is not RepoState.AVAILABLE or \
                    self.patch_state(pid) not in ("Available", "n/a"):
                raise PatchOpError(f"Patch {pid} not in Available state")
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
        return self._run(self._commit, ids, dry_run)

    def _commit(self, result, ids, dry_run) -> None:
        not_rel = sorted(pid for pid, p in self.patches.items() if p.meta.status != "REL")
        if not_rel:
            raise PatchOpError("A commit cannot be performed with non-REL status patches in the "
                            f"system:\n    {chr(10).join('    ' + p for p in not_rel).strip()}")
        for pid in ids:
            self._get(pid)
        closure = self.query_dependencies(ids, recursive=True)["patches"]
        for pid in closure:
            if self.patch_state(pid) not in ("Applied", "Committed"):
                raise PatchOpError(f"Patch {pid} is not in Applied state")
        obsolete = self._superseded(closure)
        freed = sum(path.stat().st_size for path, _ in obsolete if path.exists())
        if dry_run:
            result.add("info", f"This commit operation would free {freed / 2**20:.2f} MiB")
            return
        for path, repo_path in obsolete:
            path.unlink(missing_ok=True)
            repo_path.unlink(missing_ok=True)
        for pid in closure:
            if self.patches[pid].repostate is RepoState.APPLIED:
                self.store.move(pid, RepoState.APPLIED, RepoState.COMMITTED)
                self.patches[pid].repostate = RepoState.COMMITTED
        self._regenerate({self.patches[pid].meta.sw_version for pid in closure})
        result.add("info", f"The patches have been committed. {freed / 2**20:.2f} MiB freed.")

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
    def report_app_dependencies(self, app: str, ids: list[str]) -> bool | dict:
        """True once recorded; unknown IDs record nothing and give an error dict
        (StarlingX records them blindly, which later blocks nothing useful)."""
        with self.lock:
            unknown = sorted(set(ids) - set(self.patches))
            if unknown:
                return {"info": "", "warning": "",
                        "error": "".join(f"Patch {pid} does not exist\n" for pid in unknown)}
            deps = self.store.app_dependencies()
            if ids:
                deps[app] = sorted(set(ids))
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

    def host_install_async(self, host: str, force: bool = False) -> Result:
        """Ask ``host``'s agent to install; forced while no reboot-required patch is
        partial. The host shows ``installing`` until the report that answers it."""
        result = Result()
        with self.lock:
            self.hosts.sync()
            name = self.hosts.find(host) if host else None
            force = force or self.hosts.allow_insvc_patching()
            request_id = uuid.uuid4().hex
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
                result.add("info", f"{name} has been dropped from the host list.")
            return result
