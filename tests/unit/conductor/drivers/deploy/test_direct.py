"""The `direct` deploy interface's pure parts: image_info from instance_info (checked
against the agent's own parser), clean step selection, agent command results."""
import pytest

from conductor import config, errors
from conductor.db.records import Node
from conductor.drivers.deploy import clean as agent_clean
from conductor.drivers.deploy import direct as deploy
from conductor.drivers.deploy.client import CommandResult
from ramdisk_agent.errors import InvalidContent
from ramdisk_agent.ramdisk.imagewrite import ImageSpec

SHA256 = "ab" * 32


def node(**instance_info) -> Node:
    info = {"image_source": "http://img.example/disk.raw", "image_os_hash_algo": "sha256",
            "image_os_hash_value": SHA256}
    info.update(instance_info)
    return Node(uuid="1be26c0b-03f2-4d2d-ae87-c02d7f33c123", instance_info=info,
                properties={})


def test_whole_disk_image_info_is_what_the_agent_parses():
    info = deploy.image_info(node(image_disk_format="qcow2"))
    assert info["urls"] == ["http://img.example/disk.raw"]
    assert info["image_type"] == "whole-disk" and info["stream_raw_images"] is True
    spec = ImageSpec.from_image_info(info)
    assert (spec.url, spec.disk_format, spec.hash_algo, spec.hash_value) == (
        "http://img.example/disk.raw", "qcow2", "sha256", SHA256)


@pytest.mark.parametrize("source, expected", [
    # A stock IPA downloads an image it does not stream to $TMPDIR/<id>: the id is the
    # URL's last path segment (Ironic's), never the URL.
    ("http://img.example/images/disk.qcow2", "disk.qcow2"),
    ("https://img.example/a/b.img?sig=x/y&z=1", "b.img"),
    ("http://img.example/dir/", "dir"),
    ("http://img.example/", "NODE"), ("http://img.example", "NODE"),
    ("http://img.example/a/..", "NODE"),
    ("file:///srv/images/disk.raw", "disk.raw"),
])
def test_image_id_is_a_file_name(source, expected):
    assert deploy.image_id(source, "NODE") == expected


def test_image_info_id_is_the_images_file_name():
    info = deploy.image_info(node(image_source="http://img.example/os/disk.qcow2"))
    assert info["id"] == "disk.qcow2"
    assert info["urls"] == ["http://img.example/os/disk.qcow2"]


@pytest.mark.parametrize("fields, expected", [
    ({"image_checksum": "CD" * 64}, ("sha512", "cd" * 64)),
    ({"image_checksum": "sha384:" + "1" * 96}, ("sha384", "1" * 96)),
    ({"image_checksum": SHA256}, ("sha256", SHA256)),
])
def test_legacy_image_checksum_becomes_os_hash(fields, expected):
    info = deploy.image_info(node(image_os_hash_algo=None, image_os_hash_value=None, **fields))
    assert (info["os_hash_algo"], info["os_hash_value"]) == expected


@pytest.mark.parametrize("fields, text", [
    ({"image_os_hash_algo": None, "image_os_hash_value": None}, "checksum"),
    ({"image_os_hash_algo": "md5", "image_os_hash_value": "a" * 32}, "MD5"),
    ({"image_os_hash_value": "not-hex!"}, "image_os_hash_value is not a sha256 hex digest"),
    ({"image_source": "ftp://x/y"}, "image_source"),
    ({"image_source": None}, "image_source"),
    ({"image_type": "partition"}, "root_gb"),
])
def test_unusable_instance_info_is_a_clear_400(fields, text):
    with pytest.raises(errors.InvalidParameter) as caught:
        deploy.image_info(node(**fields))
    assert caught.value.status_code == 400 and text in str(caught.value)


#: (image_os_hash_algo, image_os_hash_value, image_checksum): every shape and refusal.
CHECKSUM_CASES = [
    ("sha256", SHA256, None), ("SHA384", "1" * 96, None), ("sha512", "CD" * 64, None),
    (None, None, SHA256), (None, None, "2" * 96), (None, None, "sha512:" + "3" * 128),
    ("sha256", None, "4" * 128), ("sha256", SHA256, "5" * 128),
    ("md5", "a" * 32, None), ("sha1", "b" * 40, None), (None, None, "c" * 32),
    (None, None, "d" * 40), (None, None, "md5:" + "e" * 32), ("crc32", "cbf43926", None),
    ("sha256", "not-hex!", None), ("sha256", "f" * 128, None), (None, None, "0" * 50),
    (None, None, "http://img.example/SHA256SUMS"), (None, None, 7), (None, None, None),
]


@pytest.mark.parametrize("algo, value, legacy", [
    ("md5", "a" * 32, None), ("sha1", "b" * 40, None), (None, None, "c" * 32),
    (None, None, "d" * 40), (None, None, "md5:" + "e" * 32), ("crc32", "cbf43926", None)])
def test_refused_algorithms_are_a_400_naming_the_accepted_ones(algo, value, legacy):
    with pytest.raises(errors.InvalidParameter) as caught:
        deploy.image_info(node(image_os_hash_algo=algo, image_os_hash_value=value,
                               image_checksum=legacy))
    assert caught.value.status_code == 400 and "sha256, sha384, sha512" in str(caught.value)


def _agent_view(algo, value, legacy) -> tuple:
    """What the agent makes of the same checksum in image_info: (algo, hex) or its error."""
    info = {"urls": ["http://img.example/disk.raw"], "os_hash_algo": algo,
            "os_hash_value": value, "checksum": legacy}
    try:
        spec = ImageSpec.from_image_info(info)
    except InvalidContent as exc:
        return ("refused", exc.message.removeprefix("image_info: "))
    return (spec.hash_algo, spec.hash_value)


def _conductor_view(algo, value, legacy) -> tuple:
    """What the conductor makes of it in instance_info, in the agent's field names."""
    try:
        info = deploy.image_info(node(image_os_hash_algo=algo, image_os_hash_value=value,
                                      image_checksum=legacy))
    except errors.InvalidParameter as exc:
        text = str(exc).removeprefix("instance_info: ").removesuffix(".")
        return ("refused", text.replace("image_os_hash_", "os_hash_")
                .replace("image_checksum", "checksum"))
    return (info["os_hash_algo"], info["os_hash_value"])


@pytest.mark.parametrize("algo, value, legacy", CHECKSUM_CASES)
def test_conductor_and_agent_apply_the_same_checksum_policy(algo, value, legacy):
    """Whatever the conductor accepts the agent verifies the same way, and what one
    refuses the other refuses with the same reason: both call wire/checksum.py."""
    assert _conductor_view(algo, value, legacy) == _agent_view(algo, value, legacy)


def test_partition_image_carries_layout_and_boot_mode():
    bios = node(image_type="partition", root_gb=10, swap_mb=512, deploy_boot_mode="bios")
    info = deploy.image_info(bios)
    assert info["root_gb"] == 10 and info["swap_mb"] == 512
    assert info["deploy_boot_mode"] == "bios" and info["disk_label"] == "msdos"
    uefi = node(image_type="partition", root_gb=10)
    uefi.properties = {"capabilities": "boot_mode:uefi,other:x"}
    assert deploy.image_info(uefi)["disk_label"] == "gpt"


OFFERED = {"GenericHardwareManager": [
    {"step": "erase_devices_metadata", "priority": 99, "interface": "deploy"},
    {"step": "erase_devices", "priority": 10, "interface": "deploy"},
    {"step": "burnin_cpu", "priority": 0, "interface": "deploy"},
    {"step": "bios_thing", "priority": 50, "interface": "bios"}],
    "VendorManager": [{"step": "erase_devices", "priority": 15, "interface": "deploy",
                       "abortable": False}]}


def test_automated_clean_uses_the_priority_overrides():
    settings = config.Settings()
    chosen = agent_clean.choose_steps(OFFERED, None, settings)
    assert [(s["step"], s["priority"]) for s in chosen] == [("erase_devices_metadata", 99)]
    settings = config.from_options({"deploy.erase_devices_priority": 5,
                                    "deploy.erase_devices_metadata_priority": 1})
    chosen = agent_clean.choose_steps(OFFERED, None, settings)
    assert [(s["step"], s["priority"]) for s in chosen] == [
        ("erase_devices", 5), ("erase_devices_metadata", 1)]
    assert chosen[0]["abortable"] is False  # the higher-priority manager's entry


def test_manual_clean_keeps_order_and_args_and_refuses_unknown_steps():
    chosen = agent_clean.choose_steps(OFFERED, [
        {"interface": "deploy", "step": "burnin_cpu", "args": {"minutes": 1}},
        {"interface": "deploy", "step": "erase_devices_metadata"}], config.Settings())
    assert [(s["step"], s["args"]) for s in chosen] == [
        ("burnin_cpu", {"minutes": 1}), ("erase_devices_metadata", {})]
    with pytest.raises(errors.InvalidParameter, match="bios.bios_thing is not offered"):
        agent_clean.choose_steps(OFFERED, [{"interface": "bios", "step": "bios_thing"}],
                                 config.Settings())


def test_command_results_are_parsed_at_the_edge():
    result = CommandResult.from_json({
        "id": "1", "command_name": "execute_deploy_step", "command_status": "FAILED",
        "command_error": {"type": "ImageChecksumError", "message": "checksum mismatch"},
        "command_result": None})
    assert not result.running and result.error_text() == "checksum mismatch"
    with pytest.raises(errors.AgentCommandError, match="not a command result"):
        CommandResult.from_json({"commands": []})


@pytest.mark.parametrize("error, text", [
    # The stock IPA (RESTError.serialize): a fixed title in message, the facts in
    # details; Ironic's get_command_error shows details first, and so do we.
    ({"type": "ImageChecksumError", "code": 500, "message": "Error verifying image checksum",
      "details": "Image failed to verify against checksum. location: http://x/disk.img; "
                 "image ID: disk.img; image checksum: 00; verification checksum: 08"},
     "Image failed to verify against checksum. location: http://x/disk.img; "
     "image ID: disk.img; image checksum: 00; verification checksum: 08"),
    # metalcast-agent: the whole text in message, details empty.
    ({"type": "AgentError", "code": 500, "message": "sgdisk failed", "details": ""},
     "sgdisk failed"),
    ({"type": "OnlyType"}, "OnlyType"),
    ({}, "status FAILED"),
    ("plain string error", "plain string error"),
])
def test_command_error_shows_details_first(error, text):
    result = CommandResult.from_json({"command_name": "execute_deploy_step",
                                      "command_status": "FAILED", "command_error": error})
    assert result.error_text() == text
