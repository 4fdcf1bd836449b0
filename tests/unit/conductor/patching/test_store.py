"""Every path the patch store builds from metadata stays inside its directory
(defence in depth behind metadata.check_name)."""
from __future__ import annotations

import pytest

from conductor.errors import ConfigError, PatchOpError
from conductor.patching import repo
from conductor.patching.controller import PatchController
from conductor.patching.store import PatchStore, RepoState, confined

ESCAPES = ["..", "../x", "1.0/../../x", "/etc", "", ".", "a/../.."]


@pytest.mark.parametrize("part", ESCAPES)
def test_confined_refuses_what_leads_outside(tmp_path, part):
    with pytest.raises(PatchOpError, match="leads outside"):
        confined(tmp_path / "packages", part)


def test_confined_keeps_what_stays_inside(tmp_path):
    assert confined(tmp_path / "packages", "1.0", "a.rpm") == tmp_path / "packages/1.0/a.rpm"


def test_store_paths_from_metadata_are_confined(tmp_path):
    store = PatchStore(tmp_path / "patching", tmp_path / "web")
    for build in (lambda v: store.package_dir(v), lambda v: store.package_path("1.0", v),
                  lambda v: store.semantic_path("pre-apply", v),
                  lambda v: store.feed_dir(v + "/../.."), lambda v: store.repo_dir("/" + v),
                  lambda v: store._meta_path(RepoState.AVAILABLE, v + "/../../x"),
                  lambda v: repo.UpdateRepo(tmp_path / "web").package_path(v, "a.rpm")):
        with pytest.raises(PatchOpError, match="leads outside"):
            build("..")
    assert store.package_path("1.0", "a-1-1.noarch.rpm") == \
        tmp_path / "patching" / "packages" / "1.0" / "a-1-1.noarch.rpm"
    assert store.repo_dir("1.0") == tmp_path / "web" / "updates" / "rel-1.0"


def test_a_failed_copy_leaves_no_partial_file(tmp_path):
    store = PatchStore(tmp_path / "patching")
    with pytest.raises(OSError):
        store.store_packages("1.0", {"a-1-1.noarch.rpm": tmp_path / "missing.rpm"})
    assert list(store.package_dir("1.0").iterdir()) == []


@pytest.mark.parametrize("release", ["../x", "1.0/..", ""])
def test_a_running_release_that_is_not_one_directory_name_stops_the_start(tmp_path, release):
    """``[patching] release`` names rel-<release> directories too."""
    with pytest.raises(ConfigError, match=r"\[patching\] release: .*Invalid release"):
        PatchController(tmp_path / "patching", tmp_path / "trusted", release,
                        host_rows=None)  # type: ignore[arg-type]
