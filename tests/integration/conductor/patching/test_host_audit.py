"""The patch host audit (StarlingX's HELLO_AGENT: ``HostCommands.audit``) follows the
hash ring (issue 17 item 3): a conductor asks only the host agents of the nodes the
ring maps to it, so each agent is asked once per audit round across the cluster, and
by the new owner after a takeover. Over a real SQLite store; the agent's command API
is the one part replaced (the twin records whom it would have asked)."""
import pytest

from conductor import config
from conductor.db import migrate
from conductor.db.engine import make_engine
from conductor.db.queries import Store
from conductor.drivers.internal_info import HOST_AGENT_KEYS
from conductor.patching.host_channel import HostCommands


class RecordingCommands(HostCommands):
    """HostCommands whose ``patching.query`` is recorded instead of sent."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.asked: list[str] = []

    def _query(self, node, settings) -> None:
        self.asked.append(node.name)


@pytest.fixture
def store(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    migrate.upgrade(engine)
    return Store(engine)


def _host(store, name, affinity=None, agent=True):
    record = {"token_hash": "0" * 64, "command_token": "sealed",
              "url": f"https://192.0.2.{len(name)}:9999"} if agent else {}
    info = {key: record[field] for field, key in zip(
        ("token_hash", "command_token", "since", "url"), HOST_AGENT_KEYS) if field in record}
    return store.create_node({"driver": "fake-hardware", "name": name,
                              "provision_state": "active", "conductor_affinity": affinity,
                              "driver_internal_info": info})


def _commands(store, owners=None):
    settings = config.from_options({"conductor.host": "c1"})
    owner_of = (lambda node: owners[node.name]) if owners is not None else None
    return RecordingCommands(store, settings, owner_of=owner_of)


def test_audit_asks_only_the_agents_of_the_nodes_the_ring_maps_here(store):
    for name in ("a", "bb", "ccc", "dddd"):
        _host(store, name, affinity="c1")
    _host(store, "no-agent", agent=False)
    owners = {"a": "c1", "bb": "c2", "ccc": "c1", "dddd": "c3", "no-agent": "c1"}
    commands = _commands(store, owners)
    asked = commands.audit()
    assert sorted(commands.asked) == ["a", "ccc"]
    assert len(asked) == 2
    # c2 died: the ring maps its node here now, and the next audit asks it
    owners["bb"] = "c1"
    commands.asked.clear()
    commands.audit()
    assert sorted(commands.asked) == ["a", "bb", "ccc"]


def test_without_a_ring_the_nodes_this_conductor_or_no_one_acted_on(store):
    _host(store, "a", affinity="c1")
    _host(store, "bb", affinity="c2")
    _host(store, "ccc")
    commands = _commands(store)
    commands.audit()
    assert sorted(commands.asked) == ["a", "ccc"]
