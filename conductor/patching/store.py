"""Where patches live on disk, in StarlingX's layout under DATA_DIR/patching.

::

    metadata/{available,applied,committed}/<ID>-metadata.xml   repo state = directory
    packages/<sw_version>/<rpm files>                          every imported RPM
    semantics/{pre-apply,pre-remove}/<ID>                      semantic check scripts
    app_dependencies.json                                      application -> patch IDs

and, under the web root that hosts fetch from over HTTP (StarlingX's /www/pages;
metalcast's HTTP boot root by default)::

    updates/rel-<ver>/                                         the update repo (repo.py)
    feed/rel-<ver>/                                            the base repo of a release

Every change is a rename or a write to a temporary name followed by a rename, so
a crash leaves either the old or the new state, never a half-imported patch.
Every path built from a patch's metadata must resolve inside its directory
(``confined``): the names are validated where they enter (metadata.check_name),
and this is the second line.
"""
from __future__ import annotations

import enum
import json
import os
import shutil
import tempfile
from pathlib import Path

from conductor.errors import InsufficientStorage, PatchOpError, is_disk_full
from conductor.patching import metadata as md


class RepoState(str, enum.Enum):
    """Persisted patch state: which metadata directory holds the patch."""

    AVAILABLE = "Available"   #: stored, not in the update repo
    APPLIED = "Applied"       #: its RPMs are in the update repo
    COMMITTED = "Committed"   #: applied for good; superseded RPMs deleted


DIRS = {RepoState.AVAILABLE: "available", RepoState.APPLIED: "applied",
        RepoState.COMMITTED: "committed"}


def confined(root: Path, *parts: str) -> Path:
    """``root / parts...``, refused unless it resolves strictly inside ``root``: no
    ``..``, no absolute part, no empty name. Resolved by name, not through symbolic
    links: only the operator makes links here (a feed on a mounted ISO is one), as
    archive members never become links."""
    base = os.path.normpath(root)
    path = os.path.normpath(os.path.join(base, *parts))
    if not path.startswith(base.rstrip(os.sep) + os.sep) or "\0" in path:
        raise PatchOpError(f"Refused: {'/'.join(parts)!r} leads outside {root}")
    return Path(path)


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as stream:
            stream.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException as exc:
        os.unlink(tmp)
        if isinstance(exc, OSError) and exc.filename is None:
            exc.filename = str(path)    # a full disk's message names the tree
        raise


class PatchStore:
    """The patch store of one appliance (one directory tree)."""

    def __init__(self, root: Path, web_root: Path | None = None):
        self.root = Path(root)
        self.web_root = Path(web_root) if web_root else self.root
        for state in DIRS.values():
            (self.root / "metadata" / state).mkdir(parents=True, exist_ok=True)
        for action in ("pre-apply", "pre-remove"):
            (self.root / "semantics" / action).mkdir(parents=True, exist_ok=True)

    # -- metadata -----------------------------------------------------------------
    def _meta_path(self, state: RepoState, patch_id: str) -> Path:
        return confined(self.root / "metadata" / DIRS[state], f"{patch_id}-metadata.xml")

    def load_all(self) -> dict[str, tuple[md.PatchMetadata, RepoState]]:
        result = {}
        for state in RepoState:
            for path in sorted((self.root / "metadata" / DIRS[state]).glob("*-metadata.xml")):
                meta = md.parse(path.read_bytes())
                result[meta.id] = (meta, state)
        return result

    def write_metadata(self, meta: md.PatchMetadata, state: RepoState) -> None:
        atomic_write(self._meta_path(state, meta.id), md.to_xml(meta))

    def move(self, patch_id: str, old: RepoState, new: RepoState) -> None:
        os.replace(self._meta_path(old, patch_id), self._meta_path(new, patch_id))

    def remove_metadata(self, patch_id: str, state: RepoState) -> None:
        self._meta_path(state, patch_id).unlink(missing_ok=True)

    # -- packages and scripts ----------------------------------------------------------
    def package_dir(self, release: str) -> Path:
        return confined(self.root / "packages", release)

    def package_path(self, release: str, filename: str) -> Path:
        return confined(self.package_dir(release), filename)

    def store_packages(self, release: str, files: dict[str, Path]) -> list[Path]:
        """Copy RPMs in; returns the new paths (for rollback)."""
        target = self.package_dir(release)
        target.mkdir(parents=True, exist_ok=True)
        written = []
        for name, source in files.items():
            dest = confined(target, name)
            tmp = target / f".{name}.part"
            try:
                shutil.copyfile(source, tmp)
                os.replace(tmp, dest)
            except OSError:     # a full disk: no partial file stays behind
                tmp.unlink(missing_ok=True)
                raise
            written.append(dest)
        return written

    def semantic_path(self, action: str, patch_id: str) -> Path:
        return confined(self.root / "semantics", action, patch_id)

    def store_semantics(self, patch_id: str, scripts: dict[str, bytes]) -> None:
        for action, script in scripts.items():
            atomic_write(self.semantic_path(action, patch_id), script, 0o544)

    def delete_semantics(self, patch_id: str) -> None:
        for action in ("pre-apply", "pre-remove"):
            self.semantic_path(action, patch_id).unlink(missing_ok=True)

    # -- application dependencies ---------------------------------------------------
    @property
    def _app_path(self) -> Path:
        return self.root / "app_dependencies.json"

    def app_dependencies(self) -> dict[str, list[str]]:
        try:
            return json.loads(self._app_path.read_text())
        except FileNotFoundError:
            return {}

    def save_app_dependencies(self, deps: dict[str, list[str]]) -> None:
        try:
            atomic_write(self._app_path, json.dumps(deps, indent=2, sort_keys=True).encode())
        except OSError as exc:
            if is_disk_full(exc):
                raise InsufficientStorage(path=self.root) from None
            raise

    # -- releases -------------------------------------------------------------------
    def feed_dir(self, release: str) -> Path:
        return confined(self.web_root / "feed", f"rel-{release}")

    def repo_dir(self, release: str) -> Path:
        return confined(self.web_root / "updates", f"rel-{release}")
