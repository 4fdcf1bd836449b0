"""The ramdisk facade's pure parts: the ``config`` half of the lookup answer."""
from conductor import config
from conductor.db.records import Node
from conductor.service.ramdisk import AgentService


def lookup_config(**node_fields) -> dict:
    service = AgentService(store=None, settings=config.Settings(), workers=None,
                           host_agents=None)
    return service.lookup_config(Node(uuid="1be26c0b-03f2-4d2d-ae87-c02d7f33c123",
                                      **node_fields), "TOKEN")


def test_lookup_config_permits_ironics_image_formats():
    """A stock IPA refuses any image whose detected format is not listed: the list is
    Ironic's default, so an image Ironic deploys, metalcast deploys."""
    assert lookup_config()["permitted_image_formats"] == ["raw", "gpt", "qcow2", "iso"]


def test_lookup_config_carries_the_token_and_requires_it():
    answer = lookup_config()
    assert answer["agent_token"] == "TOKEN" and answer["agent_token_required"] is True
    assert answer["heartbeat_timeout"] == config.Settings().agent.heartbeat_timeout
    assert answer["disable_deep_image_inspection"] is False
