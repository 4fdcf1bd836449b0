"""Nodes and ports: create, look up, uniqueness errors, cascading delete."""
from __future__ import annotations

import json
import uuid

import pytest

from conductor import errors
from conductor.db import engine as engine_module


def test_node_found_by_uuid_and_by_name(store, make_node):
    node = make_node(name="node-1", driver="ipmi", properties={"cpus": 8})
    by_uuid = store.get_node(node.uuid)
    by_name = store.get_node("node-1")
    assert by_uuid.id == by_name.id == node.id
    assert by_name.uuid == node.uuid
    assert by_uuid.driver == "ipmi"
    assert by_uuid.properties == {"cpus": 8}
    assert by_uuid.maintenance is False
    assert by_uuid.reservation is None
    assert by_uuid.created_at is not None


def test_node_with_given_uuid_keeps_it(store, make_node):
    given = str(uuid.uuid4())
    make_node(uuid=given)
    assert store.get_node(given).uuid == given


@pytest.mark.parametrize("ident", ["no-such-node", str(uuid.uuid4())])
def test_unknown_node_is_not_found(store, make_node, ident):
    make_node(name="node-1")
    with pytest.raises(errors.NodeNotFound) as exc:
        store.get_node(ident)
    assert exc.value.status_code == 404
    assert ident in str(exc.value)


@pytest.mark.parametrize("name", ["node-1", "mac-address-01", "instance_uuid-x"])
def test_duplicate_node_name_is_a_409_naming_it(store, make_node, name):
    make_node(name=name)
    with pytest.raises(errors.DuplicateName) as exc:
        make_node(name=name)
    assert exc.value.status_code == 409
    assert name in str(exc.value)
    assert len(store.list_nodes()) == 1


def test_renaming_onto_a_taken_name_is_a_409(store, make_node):
    make_node(name="taken")
    other = make_node(name="free")
    with pytest.raises(errors.DuplicateName):
        store.update_node(other.id, {"name": "taken"})
    assert store.get_node(other.uuid).name == "free"


def test_nodes_without_names_do_not_clash(store, make_node):
    make_node()
    make_node()
    assert len(store.list_nodes()) == 2


def test_duplicate_node_uuid_is_a_conflict(store, make_node):
    node = make_node(name="a")
    with pytest.raises(errors.Conflict) as exc:
        make_node(name="b", uuid=node.uuid)
    assert not isinstance(exc.value, errors.DuplicateName)
    assert node.uuid in str(exc.value)


def test_duplicate_port_mac_is_a_409(store, make_node):
    one, two = make_node(name="one"), make_node(name="two")
    store.create_port({"address": "52:54:00:12:34:56", "node_id": one.id})
    with pytest.raises(errors.MACAlreadyExists) as exc:
        store.create_port({"address": "52:54:00:12:34:56", "node_id": two.id})
    assert exc.value.status_code == 409
    assert "52:54:00:12:34:56" in str(exc.value)
    assert store.list_ports({"node_uuid": two.uuid}) == []


def test_port_found_with_its_node_uuid(store, make_node):
    node = make_node(name="one")
    port = store.create_port({"address": "52:54:00:00:00:01", "node_id": node.id})
    found = store.get_port(port.uuid)
    assert found.address == "52:54:00:00:00:01"
    assert found.node_uuid == node.uuid
    assert found.pxe_enabled is True


def test_deleting_a_node_removes_its_ports(store, make_node):
    node, other = make_node(name="doomed"), make_node(name="other")
    macs = ["52:54:00:00:00:01", "52:54:00:00:00:02"]
    ports = [store.create_port({"address": m, "node_id": node.id}) for m in macs]
    kept = store.create_port({"address": "52:54:00:00:00:03", "node_id": other.id})

    store.delete_node(node.id)

    with pytest.raises(errors.NodeNotFound):
        store.get_node("doomed")
    for port in ports:
        with pytest.raises(errors.PortNotFound):
            store.get_port(port.uuid)
    assert [p.uuid for p in store.list_ports()] == [kept.uuid]
    # The MACs are free again for a re-enrolled node.
    again = make_node(name="doomed")
    store.create_port({"address": macs[0], "node_id": again.id})


def test_the_prebuilt_statements_keep_every_shape_apart(store, make_node):
    """Store builds the hot statements once per shape (an expected NULL is IS NULL, a
    value a bound one; a node's ports by node, by MAC, by both): each shape stays
    right on both backends whatever ran before it."""
    one, two = (make_node(name=name, provision_state="enroll") for name in ("one", "two"))
    for node, mac in ((one, "52:54:00:00:00:11"), (two, "52:54:00:00:00:22")):
        store.create_port({"address": mac, "node_id": node.id})
    assert store.update_node(one.id, {"reservation": "c1"}, expect={"reservation": None})
    assert not store.update_node(one.id, {"reservation": "c2"}, expect={"reservation": None})
    assert not store.update_node(one.id, {"reservation": None}, expect={"reservation": "c2"})
    assert store.update_node(one.id, {"reservation": None, "extra": {"a": None}},
                             expect={"reservation": "c1"})
    assert store.get_node_by_id(one.id).extra == {"a": None}
    assert [p.address for p in store.list_ports({"node_uuid": two.uuid})] == \
        ["52:54:00:00:00:22"]
    assert [p.node_uuid for p in store.list_ports({"address": "52:54:00:00:00:11"})] == \
        [one.uuid]
    assert store.list_ports({"address": "52:54:00:00:00:11", "node_id": two.id}) == []
    assert store.count_nodes(["enroll", "available"]) == 2
    assert sorted(n.name for n in store.nodes_in_states(["enroll"], unreserved=True)) == \
        ["one", "two"]


def test_an_update_of_a_column_that_does_not_exist_is_refused(store, make_node):
    node = make_node(name="one", provision_state="enroll")
    with pytest.raises(ValueError, match="no column.*provision_stat"):
        store.update_node(node.id, {"provision_stat": "active"})
    assert store.get_node_by_id(node.id).provision_state == "enroll"


def test_a_write_expecting_updated_at_fails_once_anyone_wrote(store, make_node):
    """The ramdisk endpoints' one-statement writes: "only if unchanged since read"."""
    read = make_node(name="one", provision_state="wait call-back")
    assert store.update_node(read.id, {"extra": {"a": 1}}, expect={"updated_at": None})
    read = store.get_node_by_id(read.id)
    other = store.get_node_by_id(read.id)
    assert store.update_node(other.id, {"extra": {"b": 2}},
                             expect={"updated_at": other.updated_at})
    assert not store.update_node(read.id, {"extra": {"c": 3}},
                                 expect={"updated_at": read.updated_at})
    assert store.get_node_by_id(read.id).extra == {"b": 2}


def test_empty_json_columns_are_read_without_the_json_parser(store, make_node, monkeypatch):
    """Most of a node's JSON columns hold {}: on both backends (sqlite3 hands text,
    psycopg bytes) they are read without json.loads, which was most of the cost of a
    1000-node detail page on PostgreSQL when only text was recognised."""
    node = make_node(name="plain", extra={"rack": "r1"}, properties={}, traits={})
    parsed = []

    class Counting:
        dumps = staticmethod(json.dumps)

        @staticmethod
        def loads(text):
            parsed.append(text)
            return json.loads(text)
    monkeypatch.setattr(engine_module, "json", Counting)
    read = store.get_node(node.uuid)
    assert read.extra == {"rack": "r1"} and read.properties == {} and read.traits == {}
    assert [json.loads(text) for text in parsed] == [{"rack": "r1"}]
