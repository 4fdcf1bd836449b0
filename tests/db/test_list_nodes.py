"""list_nodes: keyset pagination visits every node once, in order; filters."""
from __future__ import annotations

import datetime

import pytest

from conductor import errors


def _all_pages(store, limit, **kwargs) -> list[str]:
    """Follow markers as an API client does, until a short page."""
    seen, marker = [], None
    while True:
        page = store.list_nodes(limit=limit, marker=marker, **kwargs)
        assert len(page) <= limit
        seen += [n.uuid for n in page]
        if len(page) < limit:
            return seen
        marker = page[-1].uuid


@pytest.fixture
def fleet(store, make_node):
    """11 nodes; drivers and created_at values repeat so the id tie-break matters."""
    nodes = [make_node(name=f"node-{i:02d}", driver=("ipmi", "redfish", "fake")[i % 3])
             for i in range(11)]
    same_time = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    for node in nodes[3:7]:
        store.update_node(node.id, {"created_at": same_time})
    return [store.get_node(n.uuid) for n in nodes]


def _expected(fleet, sort_key, sort_dir):
    def key(node):
        value = getattr(node, sort_key)
        if isinstance(value, datetime.datetime) and value.tzinfo is None:
            value = value.replace(tzinfo=datetime.UTC)  # SQLite drops the zone
        return (value, node.id)
    ordered = sorted(fleet, key=key, reverse=(sort_dir == "desc"))
    return [n.uuid for n in ordered]


@pytest.mark.parametrize("sort_key", ["id", "uuid", "created_at", "driver"])
@pytest.mark.parametrize("sort_dir", ["asc", "desc"])
def test_pages_visit_every_node_once_in_order(store, fleet, sort_key, sort_dir):
    expected = _expected(fleet, sort_key, sort_dir)
    assert [n.uuid for n in store.list_nodes(sort_key=sort_key, sort_dir=sort_dir)] \
        == expected
    for limit in (1, 3, 11, 50):
        assert _all_pages(store, limit, sort_key=sort_key, sort_dir=sort_dir) == expected


def test_pages_respect_filters(store, fleet):
    ipmi = [n.uuid for n in fleet if n.driver == "ipmi"]
    assert _all_pages(store, 2, filters={"driver": "ipmi"}) == ipmi


def test_unknown_marker_is_a_400(store, fleet):
    with pytest.raises(errors.InvalidParameter) as exc:
        store.list_nodes(limit=2, marker="00000000-0000-0000-0000-000000000000")
    assert exc.value.status_code == 400


def test_only_requested_columns_are_filled(store, fleet):
    nodes = store.list_nodes(columns=["uuid", "name"], limit=2)
    assert [n.name for n in nodes] == ["node-00", "node-01"]
    assert nodes[0].driver is None


def _names(store, **filters):
    return sorted(n.name for n in store.list_nodes(filters=filters))


def test_filter_by_provision_state_and_maintenance(store, make_node):
    make_node(name="a", provision_state="available")
    make_node(name="b", provision_state="active", maintenance=True)
    make_node(name="c", provision_state="active")
    assert _names(store, provision_state="active") == ["b", "c"]
    assert _names(store, maintenance=True) == ["b"]
    assert _names(store, maintenance=False) == ["a", "c"]
    assert _names(store, provision_state="active", maintenance=False) == ["c"]
    assert _names(store, provision_state="enroll") == []


def test_filter_by_associated(store, make_node):
    make_node(name="free")
    make_node(name="used", instance_uuid="6b1e8a8e-0c5e-4d1d-9d6a-0b9b3e1c2f10")
    assert _names(store, associated=True) == ["used"]
    assert _names(store, associated=False) == ["free"]


@pytest.mark.parametrize("needle, expected", [
    ("100%", ["percent"]),
    ("%", ["percent"]),
    ("_1", ["underscore"]),
    ("_", ["underscore"]),
    ("rack", ["plain", "underscore"]),
    ("RACK", ["plain", "underscore"]),      # case-insensitive on every backend
    ("\\", ["backslash"]),
])
def test_description_contains_treats_wildcards_literally(store, make_node, needle, expected):
    make_node(name="percent", description="load 100% today")
    make_node(name="plain", description="rackX1 load 100 today")
    make_node(name="underscore", description="rack_1")
    make_node(name="backslash", description="C:\\boot")
    make_node(name="none")
    assert _names(store, description_contains=needle) == expected


def test_internal_info_keys_picks_the_nodes_holding_every_key(store, make_node):
    make_node(name="both", driver_internal_info={"url": "https://h:9999", "token": "t"})
    make_node(name="url-only", driver_internal_info={"url": "https://h:9999"})
    make_node(name="null-token", driver_internal_info={"url": "https://h:9999", "token": None})
    make_node(name="empty", driver_internal_info={})
    make_node(name="none")
    assert _names(store, internal_info_keys=("url", "token")) == ["both"]
    assert _names(store, internal_info_keys=("url",)) == ["both", "null-token", "url-only"]
