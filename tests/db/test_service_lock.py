"""Service._lock (conductor/service/facade.py), the lock a provision or power request
takes before its worker starts: the node it hands on is the row as locked, read back
only when the node changed after the request read it."""
from __future__ import annotations

import dataclasses
import datetime

import pytest

from conductor import errors
from conductor.service.facade import Service


class Slots:
    def __init__(self):
        self.claimed = 0

    def claim_slot(self):
        self.claimed += 1

    def release_slot(self):
        self.claimed -= 1


def _service(store) -> Service:
    service = Service.__new__(Service)           # only what _lock uses
    service.store, service.host, service.workers = store, "c1", Slots()
    return service


def test_an_unchanged_node_is_not_read_back(store, make_node):
    service = _service(store)
    node = make_node(name="n", provision_state="available")
    store.update_node(node.id, {"description": "set before the request"})
    node = store.get_node_by_id(node.id)
    reads = []
    get = store.get_node_by_id
    store.get_node_by_id = lambda node_id: reads.append(node_id) or get(node_id)
    locked = service._lock(node, {"provision_state": "deploying"},
                           expect={"provision_state": "available"})
    del store.get_node_by_id
    assert reads == []
    row = store.get_node_by_id(node.id)
    assert _naive(locked) == _naive(row)             # the row as written, every column
    assert (locked.reservation, locked.provision_state) == ("c1", "deploying")


def _naive(node):
    """SQLite gives timestamps back without their UTC zone; the values are the same."""
    return dataclasses.replace(node, **{
        field.name: getattr(node, field.name).replace(tzinfo=None)
        for field in dataclasses.fields(node)
        if isinstance(getattr(node, field.name), datetime.datetime)})


def test_a_node_changed_after_the_read_is_read_again(store, make_node):
    service = _service(store)
    node = make_node(name="n", provision_state="available")
    store.update_node(node.id, {"instance_info": {"image_source": "http://new/img"}})
    locked = service._lock(node, {"provision_state": "deploying"},
                           expect={"provision_state": "available"})
    assert locked.instance_info == {"image_source": "http://new/img"}   # not the stale copy
    assert locked == store.get_node_by_id(node.id) and locked.reservation == "c1"


def test_a_locked_node_or_a_moved_state_is_refused_and_frees_the_slot(store, make_node):
    service = _service(store)
    node = make_node(name="n", provision_state="available")
    store.reserve(node, "other")
    with pytest.raises(errors.NodeLocked):
        service._lock(node, {"provision_state": "deploying"},
                      expect={"provision_state": "available"})
    store.release(node.id, "other", {"provision_state": "active"})
    with pytest.raises(errors.Conflict):
        service._lock(node, {"provision_state": "deploying"},
                      expect={"provision_state": "available"})
    assert service.workers.claimed == 0
    assert store.get_node_by_id(node.id).reservation is None
