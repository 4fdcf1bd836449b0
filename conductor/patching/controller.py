"""The patch controller: upload, apply, remove, delete, commit and dependency queries.

Semantics and messages are StarlingX sw-patch's (specs/starlingx-patching.md §1.5,
§5; the texts, newlines included, of its 6.0.0 controller, which its client prints
as they come), with its known weaknesses fixed: apply and remove run in dependency
order (alphabetical only where no dependency orders them), delete refuses a patch
another patch requires, and a failed upload leaves the store and the repo exactly as
they were. Every operation
returns a ``Result`` (``info``/``warning``/``error`` text, as the REST API and
``sw-patch`` show it); the host side (reports, states) is host_states.HostStates,
kept in the database so every conductor shows the same hosts. This class is the
facade the API calls (api/starlingx/patching.py) and the host channel reports to.
"""
from __future__ import annotations

import dataclasses
import logging
import tempfile
import threading
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

from conductor import errors
from conductor.alarms import AlarmTable
from conductor.db.patch_hosts import PatchHostRows
from conductor.errors import InsufficientStorage, PatchOpError
from conductor.patching import alarms as patch_alarms
from conductor.patching import archive, hosts, releases, repo
from conductor.patching import metadata as md
from conductor.patching.host_states import HostStates
from conductor.patching.metadata import PatchFormatError
from conductor.patching.operations import PatchOperations
from conductor.patching.results import Result
from conductor.patching.store import PatchStore, RepoState
from conductor.patching.unpack import IsolatedReader
from ramdisk_agent.wire import rpmver

LOG = logging.getLogger(__name__)


class HostChannel(Protocol):
    """How the controller reaches host agents (host_channel.HostCommands)."""

    def install(self, hostname: str, force: bool, request_id: str) -> None:
        """Send an install request; raises with the reason when it cannot."""

    def notify_all(self) -> None:
        """Ask every host agent to report now (StarlingX's HELLO_AGENT)."""


class PatchReader(Protocol):
    """How uploaded files are verified and unpacked (unpack.IsolatedReader)."""

    def session(self) -> AbstractContextManager[Any]:
        """For the files of one request: its ``read(path, trusted_dir, workdir)``
        returns the verified archive.PatchFile, or raises PatchFormatError."""


class UploadError(PatchOpError):
    """An upload refusal StarlingX words as it is (a missing file, a wrong extension,
    a re-import that does not match, a store failure); it words every other refusal
    of a patch file as ``Patch validation failed for <ID>:`` and the reason."""


def _upload_message(path: Path, exc: Exception) -> str:
    if isinstance(exc, (UploadError, InsufficientStorage)):
        return str(exc)
    patch_id = path.name.rsplit(".", 1)[0] if "." in path.name else path.name
    return f"Patch validation failed for {patch_id}:\n{exc}"


@dataclasses.dataclass
class Patch:
    meta: md.PatchMetadata
    repostate: RepoState


class PatchController(PatchOperations):
    """All patch state of one appliance, behind one lock (operations are short).

    ``host_rows`` holds the hosts' states (the database); ``host_channel`` sends
    install requests and HELLO_AGENT to host agents (None: host-install answers that
    no channel is configured); ``alarm_table`` receives the patching alarms;
    ``reader`` verifies and unpacks uploads (default: in a limited child process).
    """

    def __init__(self, root: Path, trusted_dir: Path, running_release: str, *,
                 host_rows: PatchHostRows, host_channel: HostChannel | None = None,
                 alarm_table: AlarmTable | None = None, web_root: Path | None = None,
                 semantic_timeout: float = 60.0, reader: PatchReader | None = None,
                 host_changed: threading.Event | None = None):
        self.store = PatchStore(root, web_root)
        self.reader = reader or IsolatedReader()
        self.trusted_dir = Path(trusted_dir)
        try:    # it names rel-<release> directories, like a patch's sw_version
            self.running_release = md.check_name("release", running_release)
        except PatchFormatError as exc:
            raise errors.ConfigError(reason=f"[patching] release: {exc}") from None
        self.semantic_timeout = semantic_timeout
        self.hosts = HostStates(host_rows)
        #: Set when a host's report changes its state: the orchestration runner waits
        #: on it, so a step sees a host finish at once instead of at its next pass.
        self.host_changed = host_changed
        self.channel = host_channel
        self.lock = threading.RLock()
        self.patches: dict[str, Patch] = {}
        self.op_counter = 1
        #: Active alarms (conductor/alarms.py); patching owns patch_alarms.IDS in it.
        self.alarms = alarm_table or AlarmTable()
        self._repo_checked = False
        self.reload()

    # -- loading and derived state ----------------------------------------------------
    def reload(self) -> None:
        with self.lock:
            self.patches = {pid: Patch(meta, state)
                            for pid, (meta, state) in self.store.load_all().items()}
            self._sync_hosts()
            self.hosts.sync()
            self.refresh_alarms()

    def _sync_hosts(self) -> None:
        self.hosts.set_patches([
            hosts.PatchInfo(p.meta.id, p.meta.sw_version, p.repostate,
                            p.meta.reboot_required,
                            {r.name: f"{r.version}-{r.release}" for r in p.meta.rpms},
                            p.meta.personalities)
            for p in self.patches.values()])

    def patch_state(self, patch_id: str) -> str:
        """The §2.2 state as of the last read (query, show and operations re-read
        the hosts other conductors recorded; reports to this one count at once)."""
        return self.hosts.patch_state(patch_id)

    def _changed(self) -> None:
        self.op_counter += 1
        self._sync_hosts()
        self.refresh_alarms()

    def refresh_alarms(self) -> None:
        self.alarms.set_active(patch_alarms.IDS, patch_alarms.evaluate(self))

    def reevaluate_alarms(self) -> None:
        """Re-read what can change behind this conductor (hosts other conductors
        recorded, the trust store on disk), then the alarms: for the alarm list."""
        with self.lock:
            self.hosts.sync()
            self.refresh_alarms()

    def report_host(self, report: hosts.HostReport, answered: str | None = None) -> None:
        """A host agent's report (``answered``: the install request it answers):
        O(its packages) state update, a row write only if something changed, alarms."""
        with self.lock:
            changed = self.hosts.report(report, answered)
            self.refresh_alarms()
        if changed and self.host_changed is not None:
            self.host_changed.set()

    def agent_restarted(self, hostname: str) -> None:
        """The host's agent came back with a new URL: no install request is running."""
        with self.lock:
            self.hosts.forget_install(hostname)

    def ensure_update_repo(self) -> None:
        """An empty update repo for the running release, as a StarlingX install has,
        so hosts can report before the first apply."""
        if self._repo_checked:
            return
        directory = self.store.repo_dir(self.running_release)
        with self.lock:
            if not (directory / "repodata").exists():
                try:
                    repo.UpdateRepo(directory).regenerate({})
                except (OSError, repo.PatchingError) as exc:
                    LOG.error("Cannot create the update repo %s: %s", directory, exc)
                    return
        self._repo_checked = True

    # -- releases (§3 init_release / del_release) ----------------------------------------
    def init_release(self, release: str) -> Result:
        return releases.init_release(self, release)

    def del_release(self, release: str) -> Result:
        return releases.del_release(self, release)

    # -- upload (§1.5) ------------------------------------------------------------------
    def scratch_dir(self) -> Path:
        """Where the API may stream an uploaded file before ``upload`` imports it."""
        scratch = self.store.root / "scratch"
        scratch.mkdir(exist_ok=True)
        return scratch

    def no_space(self) -> InsufficientStorage:
        """The error of a write to the patch store that found the disk full."""
        return InsufficientStorage(path=self.store.root)

    def upload(self, paths: list[Path]) -> Result:
        """Import each file (§1.5); every refusal is a line of the result's error."""
        result = Result()
        try:
            with self.reader.session() as reader:   # one reader process per request
                for path in paths:
                    try:
                        self._upload_one(Path(path), result, reader)
                    except (PatchOpError, PatchFormatError, repo.PatchingError,
                            InsufficientStorage) as exc:
                        result.add("error", _upload_message(Path(path), exc))
        finally:
            with self.lock:
                self._changed()
        return result

    def _upload_one(self, path: Path, result: Result, reader: Any) -> None:
        if not path.is_file():
            raise UploadError(f"File does not exist: {path.name}")
        patch_id = path.name.rsplit(".", 1)[0] if "." in path.name else path.name
        if self._committed(patch_id, result):
            return
        if patch_id not in self.patches and not path.name.endswith(".patch"):
            raise UploadError(f"File must end in .patch extension: {path.name}")
        try:
            with tempfile.TemporaryDirectory(dir=self.store.root, prefix=".upload-") as work:
                # Outside the lock: a large or hostile file holds up no other operation.
                loaded = reader.read(path, self.trusted_dir, Path(work) / "p")
                with self.lock:
                    self._store_upload(patch_id, loaded, result)
        except InsufficientStorage:
            raise self.no_space() from None
        except OSError as exc:      # the work directory itself (TemporaryDirectory)
            if errors.is_disk_full(exc):
                raise self.no_space() from None
            raise

    def _committed(self, patch_id: str, result: Result) -> bool:
        with self.lock:
            existing = self.patches.get(patch_id)
        if existing and existing.repostate is RepoState.COMMITTED:
            result.add("info", f"{patch_id} is committed. Metadata not updated")
            return True
        return False

    def _store_upload(self, patch_id: str, loaded: archive.PatchFile, result: Result) -> None:
        """Under the lock, as the store is now (it may have changed during the read)."""
        if self._committed(patch_id, result):
            return
        existing = self.patches.get(patch_id)
        if existing is not None:
            self._reimport(existing, loaded, result)
            return
        self._check_new(loaded)
        self._import(loaded)
        result.add("info", f"{loaded.metadata.id} is now available")

    def _reimport(self, existing: Patch, loaded: archive.PatchFile, result: Result) -> None:
        if sorted(existing.meta.contents) != sorted(loaded.metadata.contents) or \
                existing.meta.id != loaded.metadata.id:
            raise UploadError(f"Contents of {existing.meta.id} do not match re-imported patch")
        self.store.write_metadata(loaded.metadata, existing.repostate)
        existing.meta = loaded.metadata
        result.add("info", f"{existing.meta.id} is already imported. Updated metadata only")

    def _check_new(self, loaded: archive.PatchFile) -> None:
        meta = loaded.metadata
        if meta.id in self.patches:
            raise PatchOpError(f"Patch {meta.id} already exists")
        feed = self.store.feed_dir(meta.sw_version)
        if not feed.is_dir():
            raise PatchOpError(f"Patch {meta.id} software release ({meta.sw_version}) "
                               "is not installed")
        base = repo.base_packages(feed)
        read = repo.headers(list(loaded.rpms.values()))
        provided = {(r.name, r.arch, r.evr): pid for pid, p in self.patches.items()
                    for r in p.meta.rpms if p.meta.sw_version == meta.sw_version}
        for rpm in meta.rpms:
            header = read[loaded.rpms[rpm.file_basename]]
            if (header.name, header.version, header.release, header.arch) != \
                    (rpm.name, rpm.version, rpm.release, rpm.arch):
                raise PatchOpError(f"RPM {rpm.filename} in patch {meta.id} is not what "
                                   f"its file name says ({header.name}-{header.version}-"
                                   f"{header.release}.{header.arch})")
            original = base.get((rpm.name, rpm.arch))
            if original and rpmver.label_compare(header.evr, original) <= 0:
                raise PatchOpError(f"RPM {rpm.filename} in patch {meta.id} must be higher "
                                   f"version than original ({original[1]}-{original[2]})")
            other = provided.get((rpm.name, rpm.arch, header.evr))
            if other:
                raise PatchOpError(f"Patch {meta.id} contains rpm {rpm.filename}, which "
                                   f"is already provided by patch {other}")

    def _import(self, loaded: archive.PatchFile) -> None:
        """Store RPMs, scripts, then metadata last: the metadata file is the commit."""
        meta = loaded.metadata
        written: list[Path] = []
        try:
            written = self.store.store_packages(meta.sw_version, loaded.rpms)
            self.store.store_semantics(meta.id, loaded.semantics)
            self.store.write_metadata(meta, RepoState.AVAILABLE)
        except OSError as exc:
            for path in written:
                path.unlink(missing_ok=True)
            self.store.delete_semantics(meta.id)
            if errors.is_disk_full(exc):
                raise self.no_space() from None
            LOG.error("Failed to store patch %s: %s", meta.id, exc)
            raise UploadError(f"Failed to import patch {meta.id}") from None
        self.patches[meta.id] = Patch(meta, RepoState.AVAILABLE)
        LOG.info("Patch %s imported (%d RPMs, release %s)", meta.id, len(loaded.rpms),
                 meta.sw_version)

    # -- dependencies (§5.5) ----------------------------------------------------------
    def dependency_order(self, ids: list[str]) -> list[str]:
        """``ids`` ordered so that a patch comes after the patches it requires."""
        wanted, ordered, seen = set(ids), [], set()

        def visit(pid: str, path: tuple) -> None:
            if pid in seen or pid in path:
                return  # done, or a cycle: StarlingX does not detect them either
            for req in sorted(self.patches[pid].meta.requires):
                if req in wanted:
                    visit(req, path + (pid,))
            seen.add(pid)
            ordered.append(pid)

        for pid in sorted(wanted):
            visit(pid, ())
        return ordered

    def removal_order(self, ids: list[str]) -> list[str]:
        """``ids`` ordered so that a patch comes before the patches it requires, and
        otherwise alphabetically (StarlingX removes in alphabetical order only)."""
        wanted = set(ids)
        users = {pid: {o for o in wanted if pid in self.patches[o].meta.requires}
                 for pid in wanted}
        ordered: list[str] = []
        while len(ordered) < len(wanted):
            ready = [pid for pid in sorted(wanted - set(ordered))
                     if users[pid] <= set(ordered)]
            # A cycle (StarlingX detects none either) leaves nothing ready: take the rest.
            ordered.append(ready[0] if ready else sorted(wanted - set(ordered))[0])
        return ordered

    def what_requires(self, ids: list[str]) -> Result:
        """StarlingX's answer: one line per patch, or only the unknown IDs' errors."""
        result = Result()
        with self.lock:
            for pid in ids:
                if pid not in self.patches:
                    result.add("error", f"Patch {pid} does not exist")
            if result.error:
                return result
            for pid in ids:
                users = sorted(p for p, patch in self.patches.items()
                               if pid in patch.meta.requires)
                result.add("info", f"{pid} is required by: {', '.join(users)}" if users
                           else f"{pid} is not required by any patches.")
        return result

    def query_dependencies(self, ids: list[str], recursive: bool = False) -> dict:
        with self.lock:
            missing = sorted(pid for pid in set(ids) if pid not in self.patches)
            if missing:
                return {"patches": [], "error": "".join(
                    f"{pid} is unrecognized\n" for pid in missing)}
            found, todo = set(ids), list(ids)
            while todo:
                for req in self.patches[todo.pop()].meta.requires:
                    if req not in found and req in self.patches:
                        found.add(req)
                        if recursive:
                            todo.append(req)
            return {"patches": sorted(found), "error": ""}

    # -- queries ----------------------------------------------------------------------
    def query(self, show: str = "all", release: str | None = None) -> dict:
        with self.lock:
            self.hosts.sync()
            return self._query(show, release)

    def _query(self, show: str = "all", release: str | None = None) -> dict:
        wanted = {"available": ("Available",), "applied": ("Applied",),
                  "committed": ("Committed",)}.get(show)
        with self.lock:
            pd = {}
            for pid, patch in sorted(self.patches.items()):
                if release and patch.meta.sw_version != release:
                    continue
                if wanted and patch.repostate.value not in wanted:
                    continue
                entry = patch.meta.as_query_dict()
                entry.update(repostate=patch.repostate.value, patchstate=self.patch_state(pid))
                pd[pid] = entry
            return {"pd": pd}

    def show(self, ids: list[str]) -> dict:
        with self.lock:
            self.hosts.sync()
            data: dict[str, Any] = {"metadata": {}, "contents": {}, "error": ""}
            every = self._query()["pd"]
            for pid in ids:
                if pid not in self.patches:
                    data["error"] += f"{pid} is unrecognized\n"
                    continue
                entry = every[pid]
                data["metadata"][pid] = entry
                data["contents"][pid] = list(self.patches[pid].meta.contents)
            return data

    def installed_patch_ids(self, release: str) -> list[str]:
        """IDs of the patches of ``release`` whose RPMs are in its update repo
        (Applied or Committed): what a deploy installs into a new root."""
        with self.lock:
            return sorted(pid for pid, patch in self.patches.items()
                          if patch.meta.sw_version == release and patch.repostate in
                          (RepoState.APPLIED, RepoState.COMMITTED))

    def is_in_state(self, ids: list[str], state: str) -> bool:
        with self.lock:
            self.hosts.sync()
            return bool(ids) and all(pid in self.patches and self.patch_state(pid) == state
                                     for pid in ids)
