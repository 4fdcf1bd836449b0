"""Where a request target may lead inside the HTTP boot root (``resolve``): files only,
never out of the root. The server is tested against curl in
tests/functional/test_http_boot.py, its attacks in tests/security/."""
from __future__ import annotations

import os

import pytest

from conductor.netboot.http_connection import resolve


@pytest.fixture
def root(tmp_path):
    top = tmp_path / "root"
    (top / "images").mkdir(parents=True)
    (top / "images" / "disk.img").write_bytes(b"disk")
    (tmp_path / "secret.txt").write_text("outside")
    os.symlink(tmp_path / "secret.txt", top / "escape.txt")
    os.symlink(tmp_path, top / "up")
    os.symlink(top / "images" / "disk.img", top / "alias.img")
    return top


@pytest.mark.parametrize("target, name", [
    ("/images/disk.img", "images/disk.img"), ("//images///disk.img", "images/disk.img"),
    ("/images/disk%2eimg?x=1", "images/disk.img"), ("http://boot/images/disk.img",
                                                     "images/disk.img"),
    ("/alias.img", "images/disk.img"),  # a symlink inside the root: its target
])
def test_files_under_the_root_are_found(root, target, name):
    assert resolve(root, target) == root / name


@pytest.mark.parametrize("target", [
    "/../secret.txt", "/images/../../secret.txt", "/%2e%2e/secret.txt", "/escape.txt",
    "/up/secret.txt", "/images", "/", "", "*", "/nope", "/images/disk.img%00.png",
    "/" + "a" * 5000, "/images/./disk.img",
])
def test_nothing_else_is(root, target):
    assert resolve(root, target) is None
