"""Root partition choice and parameters of ``deploy.install_patches`` (both sides)."""
from __future__ import annotations

import struct
import uuid
from types import SimpleNamespace

import pytest

from conductor import errors
from conductor.config import from_options
from conductor.drivers.deploy import patches as deploy_patches
from conductor.patching.controller import PatchController
from conductor.patching.store import RepoState
from ramdisk_agent import gpt
from ramdisk_agent.commands import CommandRunner
from ramdisk_agent.errors import AgentError, InvalidContent
from ramdisk_agent.extensions import patches

LINUX_DATA = "0fc63daf-8483-4772-8e3d-3d69d8477de4"
SWAP = "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f"


def write_gpt(path, parts: list[tuple[str, int, int]]) -> str:
    """A minimal GPT (header + 128 entries at LBA 2) with (type, first, last) partitions."""
    header = bytearray(gpt.SECTOR)
    header[:8] = b"EFI PART"
    header[56:72] = uuid.uuid4().bytes_le
    struct.pack_into("<QII", header, 72, 2, 128, 128)
    entries = bytearray(128 * 128)
    for i, (type_guid, first, last) in enumerate(parts):
        entry = 128 * i
        entries[entry:entry + 16] = uuid.UUID(type_guid).bytes_le
        entries[entry + 16:entry + 32] = uuid.uuid4().bytes_le
        struct.pack_into("<QQ", entries, entry + 32, first, last)
    path.write_bytes(bytes(gpt.SECTOR) + bytes(header) + bytes(entries) + bytes(64 << 10))
    return str(path)


def test_root_partition_prefers_the_root_type_then_the_largest_data_partition(tmp_path):
    disk = write_gpt(tmp_path / "a", [(gpt.ESP_TYPE, 2048, 99999), (LINUX_DATA, 100000, 200000),
                                      (patches.ROOT_TYPES[0], 200001, 210000)])
    assert patches.root_partition(disk).number == 3
    disk = write_gpt(tmp_path / "b", [(gpt.ESP_TYPE, 2048, 999999), (SWAP, 10**6, 3 * 10**6),
                                      (LINUX_DATA, 3 * 10**6 + 1, 4 * 10**6),
                                      (LINUX_DATA, 4 * 10**6 + 1, 4 * 10**6 + 10)])
    assert patches.root_partition(disk).number == 3          # not the ESP or swap
    assert patches.root_partition(disk, 4).number == 4
    with pytest.raises(AgentError, match="has no partition 7"):
        patches.root_partition(disk, 7)
    disk = write_gpt(tmp_path / "c", [(gpt.ESP_TYPE, 2048, 9999), (SWAP, 10000, 20000)])
    with pytest.raises(AgentError, match="no partition that can hold a root"):
        patches.root_partition(disk)
    blank = tmp_path / "d"
    blank.write_bytes(bytes(64 << 10))
    with pytest.raises(AgentError, match="has no GPT partition table"):
        patches.root_partition(str(blank))


GOOD = {"base_repo_url": "http://h/feed/rel-1.0", "updates_repo_url": "http://h/updates/rel-1.0",
        "sw_version": "1.0", "nodetype": "controller", "subfunctions": None, "partition": None}


@pytest.mark.parametrize("bad, message", [
    ({"base_repo_url": ""}, '"base_repo_url" must be a non-empty string'),
    ({"base_repo_url": "ftp://x"}, '"base_repo_url" must be an http'),
    ({"updates_repo_url": 5}, '"updates_repo_url" must be an http'),
    ({"sw_version": None}, '"sw_version" must be'),
    ({"subfunctions": "worker"}, '"subfunctions" must be a list'),
    ({"subfunctions": [""]}, '"subfunctions" must be a list'),
    ({"partition": True}, '"partition" must be a positive integer'),
    ({"partition": 0}, '"partition" must be a positive integer'),
])
def test_agent_refuses_bad_params(bad, message):
    """Refused in the request (400), nothing recorded; the good params pass the check."""
    runner = CommandRunner([patches.PatchesExtension(SimpleNamespace())])
    with pytest.raises(InvalidContent, match=message) as exc:
        runner.execute("deploy.install_patches", dict(GOOD, **bad))
    assert exc.value.status_code == 400 and runner.list() == []
    patches.check_install_patches(GOOD)


def _task(instance_info=None, properties=None, http_url="http://10.0.0.1:8080/",
          repo_url=""):
    netboot = SimpleNamespace(http_url=http_url)
    context = SimpleNamespace(settings=from_options({"patching.repo_url": repo_url}),
                              netboot=netboot)
    node = SimpleNamespace(uuid="u-1", instance_info=instance_info or {},
                           properties=properties or {})
    return SimpleNamespace(node=node, context=context)


def test_command_params_from_the_node():
    params = deploy_patches.command_params(
        _task(properties={"nodetype": "worker", "subfunctions": "worker, lowlatency"}), "1.0")
    assert params == {"base_repo_url": "http://10.0.0.1:8080/feed/rel-1.0",
                      "updates_repo_url": "http://10.0.0.1:8080/updates/rel-1.0",
                      "sw_version": "1.0", "nodetype": "worker",
                      "subfunctions": ["worker", "lowlatency"]}
    params = deploy_patches.command_params(
        _task({"patching_nodetype": "storage", "patching_root_partition": "3"},
              {"nodetype": "worker"}, repo_url="http://repo/"), "2.0")
    assert (params["nodetype"], params["subfunctions"], params["partition"]) == \
        ("storage", ["storage"], 3)
    assert params["base_repo_url"] == "http://repo/feed/rel-2.0"


@pytest.mark.parametrize("task, message", [
    (_task(http_url=""), r"no URL the ramdisk can fetch the update repo from"),
    (_task({"patching_root_partition": "root"}), "must be a partition number"),
    (_task({"patching_subfunctions": [1]}), "must be a list of names"),
    (_task({"patching_nodetype": ["x"]}), "patching_nodetype must be a string"),
])
def test_command_params_refuse_bad_node_fields(task, message):
    with pytest.raises(errors.InvalidParameter, match=message):
        deploy_patches.command_params(task, "1.0")


def test_only_applied_and_committed_patches_of_the_release_count():
    import threading

    def patch(release, state):
        return SimpleNamespace(meta=SimpleNamespace(sw_version=release), repostate=state)
    controller = SimpleNamespace(lock=threading.RLock(), patches={
        "A": patch("1.0", RepoState.APPLIED), "B": patch("1.0", RepoState.AVAILABLE),
        "C": patch("1.0", RepoState.COMMITTED), "D": patch("2.0", RepoState.APPLIED)})
    # What a deploy installs into the new root (conductor/drivers/deploy/patches.py).
    assert PatchController.installed_patch_ids(controller, "1.0") == ["A", "C"]
    assert PatchController.installed_patch_ids(controller, "3.0") == []
