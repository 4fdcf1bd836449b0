"""The ramdisk facade's pure parts: the ``config`` half of the lookup answer, and
what a heartbeat is refused for before the node's lock is taken."""
import pytest

from conductor import config, errors
from conductor.db.records import Node
from conductor.drivers import internal_info
from conductor.drivers.deploy.heartbeat import Heartbeat
from conductor.service import ramdisk
from conductor.service.ramdisk import AgentService
from ramdisk_agent.wire.agent_tokens import token_hash


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


# -- heartbeats --------------------------------------------------------------------
class OneNodeStore:
    """get_node answers one node; taking its lock is recorded (and refused)."""

    def __init__(self, node: Node):
        self.node, self.reserved = node, 0

    def get_node(self, ident):
        return self.node

    def reserve(self, node, host, values=None, expect=None):
        self.reserved += 1
        raise errors.NodeLocked(node=node.uuid, host="someone")


class Workers:
    def __init__(self):
        self.claimed = 0

    def claim_slot(self):
        self.claimed += 1

    def release_slot(self):
        self.claimed -= 1


def beating_node(pem: str | None, reservation: str | None) -> Node:
    info = internal_info.with_heartbeat({"agent_token_hash": token_hash("T")},
                                        "https://10.0.0.5:9999", "1.0", "now", pem)
    return Node(id=3, uuid="1be26c0b-03f2-4d2d-ae87-c02d7f33c123", provision_state="wait call-back",
                maintenance=False, reservation=reservation, driver_internal_info=info)


def test_a_heartbeat_on_a_busy_node_is_409_before_any_lock(monkeypatch):
    """The agent beats when its command ends, often while the worker that sent it
    holds the node: refused from the node already read, no lock attempt, no slot."""
    store, workers = OneNodeStore(beating_node("PEM", reservation="conductor-1")), Workers()
    parsed = []
    monkeypatch.setattr(ramdisk, "check_pem_certificate", parsed.append)
    service = AgentService(store=store, settings=config.Settings(), workers=workers,
                           host_agents=None)
    with pytest.raises(errors.NodeLocked, match="conductor-1"):
        service.heartbeat("node", Heartbeat("https://10.0.0.5:9999", "T", "1.0", "PEM"))
    assert store.reserved == 0 and workers.claimed == 0
    # The certificate is the one of the first heartbeat, parsed then: not again.
    assert parsed == []


def test_a_heartbeat_with_a_new_or_changed_certificate_is_checked(monkeypatch):
    parsed = []
    monkeypatch.setattr(ramdisk, "check_pem_certificate", parsed.append)
    service = AgentService(store=OneNodeStore(beating_node(None, "conductor-1")),
                           settings=config.Settings(), workers=Workers(), host_agents=None)
    with pytest.raises(errors.NodeLocked):
        service.heartbeat("node", Heartbeat("https://10.0.0.5:9999", "T", "1.0", "FIRST"))
    assert parsed == ["FIRST"]
    service.store = OneNodeStore(beating_node("FIRST", None))
    with pytest.raises(errors.InvalidParameter, match="agent_verify_ca"):
        service.heartbeat("node", Heartbeat("https://10.0.0.5:9999", "T", "1.0", "OTHER"))
