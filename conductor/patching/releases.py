"""init_release / del_release (specs/starlingx-patching.md §3): releases beside the running one.

StarlingX's load import calls init_release to give a newly imported release an
empty update repo (so hosts of that release can already be pointed at it), and
load delete calls del_release to drop everything the controller keeps for it:
its patches' metadata and semantic scripts, its packages and its update repo.
Both refuse the running release. Messages are StarlingX's (``Rejected:
Requested release X is running release``, ``Patch repository for X already
exists`` / ``does not exist``); the base feed is the load's, so it stays.
"""
from __future__ import annotations

import functools
import logging
import shutil

from conductor.errors import PatchOpError
from conductor.patching import repo
from conductor.patching.metadata import PatchFormatError, check_name
from conductor.patching.store import RepoState

LOG = logging.getLogger(__name__)


def _check(controller, release: str) -> None:
    try:   # a release is one path component (it names rel-<ver> directories)
        check_name("release", release)
    except PatchFormatError as exc:
        raise PatchOpError(str(exc)) from None
    if release == controller.running_release:
        raise PatchOpError(f"Rejected: Requested release {release} is running release")


def init_release(controller, release: str):
    """Create the empty update repo of a release that is not running."""
    return controller._run(functools.partial(_init, controller), release, prefix="")


def _init(controller, result, release: str) -> None:
    _check(controller, release)
    directory = controller.store.repo_dir(release)
    if directory.exists():
        result.add("info", f"Patch repository for {release} already exists")
        return
    try:
        repo.UpdateRepo(directory).regenerate({})
    except repo.PatchingError:
        shutil.rmtree(directory, ignore_errors=True)     # nothing half-made is left
        raise
    # Done: StarlingX says nothing then (sw-patch prints nothing).
    LOG.info("Initialized the patch repository of release %s at %s", release, directory)


def del_release(controller, release: str):
    """Delete the patches, packages and update repo of a release that is not running."""
    return controller._run(functools.partial(_delete, controller), release, prefix="")


def _delete(controller, result, release: str) -> None:
    _check(controller, release)
    doomed = sorted(pid for pid, patch in controller.patches.items()
                    if patch.meta.sw_version == release)
    for pid in doomed:
        patch = controller.patches.pop(pid)
        controller.store.delete_semantics(pid)
        controller.store.remove_metadata(pid, RepoState(patch.repostate))
    shutil.rmtree(controller.store.package_dir(release), ignore_errors=True)
    directory = controller.store.repo_dir(release)
    if not directory.exists():
        result.add("info", f"Patch repository for {release} does not exist")
        return
    shutil.rmtree(directory)
    # Done: StarlingX says nothing then (sw-patch prints nothing).
    LOG.info("Deleted release %s: %d patch(es) (%s) and its update repo", release,
             len(doomed), ", ".join(doomed))
