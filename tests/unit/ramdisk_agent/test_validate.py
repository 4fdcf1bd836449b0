"""Every agent command checks its parameters in the request, as IPA's command
validators do: bad params answer 400 (``faultcode`` Client, a message naming the
parameter), nothing is recorded in ``GET /v1/commands/``, nothing runs, and the agent
stays idle, so the next valid command is accepted at once.

Driven through the command API router (werkzeug's test ``Client``) with the real
extensions of both modes (ramdisk and host) and a stub agent object that records any
use: a validator must not need the agent, and a refused command must not reach it.
"""
from __future__ import annotations

import json

import pytest
from werkzeug.test import Client

from ramdisk_agent.commands import CommandRunner
from ramdisk_agent.extensions import all_extensions
from ramdisk_agent.extensions.patching import PatchingExtension
from ramdisk_agent.server import create_app
from ramdisk_agent.wire.statuses import SUCCEEDED

TOKEN = "validators-t0ken"
COMMANDS = f"/v1/commands/?agent_token={TOKEN}"
IMAGE = {"urls": ["http://127.0.0.1:1/disk.raw"], "os_hash_algo": "sha256",
         "os_hash_value": "ab" * 32}
PATCHES = {"base_repo_url": "http://h/feed/rel-1.0", "sw_version": "1.0",
           "nodetype": "controller"}


class StubAgent:
    """Records every attribute a command reads: a refused command must read none
    (nor does ``get_deploy_steps``, the harmless follow-up)."""

    def __init__(self):
        self.used: list[str] = []

    @property
    def node_uuid(self):
        self.used.append("node_uuid")
        return None

    def __getattr__(self, name):
        self.used.append(name)
        raise AttributeError(name)


def write_image(args=None, **params) -> dict:
    step = {"interface": "deploy", "step": "write_image", "priority": 0,
            "args": {"image_info": IMAGE} if args is None else args}
    return dict({"step": step, "node": {}, "ports": []}, **params)


def image(**fields) -> dict:
    return write_image({"image_info": dict(IMAGE, **fields)})


def clean(step) -> dict:
    return {"step": step, "node": {}, "ports": [], "clean_version": {}}


#: (command, params, what the message must say) - every command has cases.
BAD = [
    ("standby.power_off", {"junk": 1}, "unexpected keyword argument 'junk'"),
    ("standby.reboot", {"force": True}, "unexpected keyword argument 'force'"),
    ("standby.sync", {"x": 1}, "unexpected keyword argument 'x'"),
    ("standby.get_partition_uuids", {"disk": "/dev/sda"}, "unexpected keyword argument"),
    ("clean.get_clean_steps", {"node": "n1"}, '"node" must be an object, not str'),
    ("clean.get_clean_steps", {"node": {}, "ports": {}}, '"ports" must be a list'),
    ("clean.execute_clean_step", {}, "missing a required argument: 'step'"),
    ("clean.execute_clean_step", clean(None), '"step" is required: an object'),
    ("clean.execute_clean_step", clean("erase_devices"), '"step" must be an object'),
    ("clean.execute_clean_step", clean({"step": "format_c"}),
     '"step.step" must name a clean step (erase_devices, erase_devices_metadata)'),
    ("clean.execute_clean_step", clean({"step": ["erase_devices"]}), '"step.step" must'),
    ("clean.execute_clean_step", clean({"step": "erase_devices", "args": [1]}),
     '"step.args" must be an object, not list'),
    ("clean.execute_clean_step", dict(clean({"step": "erase_devices"}), ports="p"),
     '"ports" must be a list'),
    ("deploy.get_deploy_steps", {"node": 5}, '"node" must be an object, not int'),
    ("deploy.get_deploy_steps", {"node": {"properties": "x"}},
     '"node.properties" must be an object'),
    ("deploy.execute_deploy_step", {"step": 7}, '"step" must be an object, not int'),
    ("deploy.execute_deploy_step", {"step": {"step": "erase_devices"}},
     '"step.step" must name a deploy step (erase_devices_metadata, write_image)'),
    ("deploy.execute_deploy_step", write_image({}),
     '"step.args.image_info" is required: an object'),
    ("deploy.execute_deploy_step", write_image({"image_info": "http://x/y"}),
     '"step.args.image_info" must be an object, not str'),
    ("deploy.execute_deploy_step", image(urls=[]), "image_info.urls must list"),
    ("deploy.execute_deploy_step", image(urls="http://x/y"), "image_info.urls must list"),
    ("deploy.execute_deploy_step", image(urls=[5]), "image_info.urls[0] must be an http(s)"),
    ("deploy.execute_deploy_step", image(urls=["file:///srv/x.raw?sig=s3cret"]),
     "image_info.urls[0] must be an http(s) URL, not a file URL"),
    ("deploy.execute_deploy_step", image(urls=["http:/no-host?sig=s3cret"]),
     "image_info.urls[0] must be an http(s) URL, not a http URL"),
    ("deploy.execute_deploy_step", image(os_hash_algo="crc32"),
     "unknown image checksum algorithm 'crc32'; accepted: sha256, sha384, sha512"),
    ("deploy.execute_deploy_step", image(os_hash_algo="md5", os_hash_value="0" * 32),
     "MD5 image checksums are not accepted"),
    ("deploy.execute_deploy_step", image(os_hash_value="not hex!"),
     "os_hash_value is not a sha256 hex digest"),
    ("deploy.execute_deploy_step", image(os_hash_algo=None, os_hash_value=None, checksum=5),
     "checksum must be a string, not int"),
    ("deploy.execute_deploy_step", image(disk_format="vmdk"), "disk_format 'vmdk'"),
    ("deploy.execute_deploy_step", image(disk_format=3), "disk_format 3"),
    ("deploy.execute_deploy_step", image(image_type="partition"), "Partition images"),
    ("deploy.execute_deploy_step", image(delta={"url": "ftp://h/p"}),
     "image_info.delta needs an http(s) url"),
    ("deploy.execute_deploy_step", image(delta={"url": "http://h/p", "public_key": "zz"}),
     "unusable delta public key"),
    ("deploy.execute_deploy_step", write_image({"image_info": IMAGE, "configdrive": 5}),
     '"step.args.configdrive" must be a string'),
    ("deploy.execute_deploy_step", write_image({"image_info": IMAGE, "verify": "yes"}),
     '"step.args.verify" must be a boolean'),
    ("deploy.execute_deploy_step",
     write_image(node={"properties": {"root_device": {"colour": "red"}}}),
     "Unsupported root device hint 'colour'"),
    ("deploy.execute_deploy_step", write_image(node={"properties": {"root_device": "sda"}}),
     '"node.properties.root_device" must be an object'),
    ("deploy.execute_deploy_step",
     write_image(node={"properties": {"root_device": {"size": "big"}}}),
     "Invalid root device hint size 'big'"),
    ("deploy.install_patches", dict(PATCHES, sw_version=1), '"sw_version" must be'),
    ("deploy.install_patches", dict(PATCHES, base_repo_url="ftp://h/feed"),
     '"base_repo_url" must be an http'),
    ("deploy.install_patches", dict(PATCHES, partition="2"), '"partition" must be a positive'),
    ("image.install_bootloader", {"target_boot_mode": "efi"},
     '"target_boot_mode" must be one of bios, uefi'),
    ("image.install_bootloader", {"root_uuid": 5}, '"root_uuid" must be a string, not int'),
    ("patching.install", {"force": "yes"}, '"force" must be a boolean'),
    ("patching.install", {"locked": "no"}, '"locked" must be a boolean'),
    ("patching.install", {"request_id": []}, '"request_id" must be a string'),
    ("patching.query", {"x": 1}, "unexpected keyword argument 'x'"),
]


@pytest.fixture()
def agent():
    """(WSGI client, runner, stub agent): ramdisk extensions plus host mode's patching."""
    stub = StubAgent()
    runner = CommandRunner([*all_extensions(stub), PatchingExtension(stub)])
    return Client(create_app(runner, lambda: TOKEN)), runner, stub


def listed(client) -> list:
    response = client.get(COMMANDS)
    assert response.status_code == 200
    return json.loads(response.get_data())["commands"]


def test_every_command_has_bad_cases(agent):
    assert {name for name, _, _ in BAD} == set(agent[1].registry)


@pytest.mark.parametrize("name, params, message", BAD,
                         ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(BAD)])
@pytest.mark.parametrize("wait", ["true", "false"])
def test_bad_params_are_a_400_that_records_nothing(agent, name, params, message, wait):
    client, runner, stub = agent
    before = listed(client)
    response = client.post(f"{COMMANDS}&wait={wait}", json={"name": name, "params": params})
    assert response.status_code == 400, response.get_data()
    fault = json.loads(response.get_data())
    assert fault["faultcode"] == "Client"
    assert fault["faultstring"].startswith(f"Invalid parameters for {name}: ")
    assert message in fault["faultstring"], fault["faultstring"]
    assert "s3cret" not in fault["faultstring"]
    assert listed(client) == before == [] and stub.used == []
    # Still idle: the next valid command (sync, harmless) is accepted and runs.
    good = client.post(COMMANDS, json={
        "name": "deploy.get_deploy_steps", "params": {"node": {}, "ports": []}})
    assert good.status_code == 200
    assert json.loads(good.get_data())["command_status"] == SUCCEEDED
    assert [c["command_name"] for c in listed(client)] == ["get_deploy_steps"]
    assert stub.used == []


@pytest.mark.parametrize("name, params", [
    ("deploy.execute_deploy_step", write_image()),
    ("deploy.execute_deploy_step", write_image(
        {"image_info": dict(IMAGE, disk_format="QCOW2"), "configdrive": "H4sI",
         "verify": True}, node={"properties": {"root_device": {"size": ">= 4",
                                                               "rotational": "no"}}})),
    ("deploy.execute_deploy_step", {"step": {"step": "erase_devices_metadata"}}),
    ("clean.execute_clean_step", clean({"step": "erase_devices_metadata", "args": {}})),
    ("deploy.install_patches", dict(PATCHES, subfunctions=["controller"], partition=2)),
    ("patching.install", {"force": None, "locked": True, "request_id": "r1"}),
    ("image.install_bootloader", {"root_uuid": "0x1234", "target_boot_mode": None}),
])
def test_what_ironic_and_the_conductor_send_passes_the_check(agent, name, params):
    """The validators accept the shapes the senders use (checked without running)."""
    runner = agent[1]
    command = runner.registry[name]
    assert runner._check_params(name, command, params) is None   # raises when refused
    assert runner.list() == []                                    # and nothing ran
