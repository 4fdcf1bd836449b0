"""The dns_pending_removals queries on each backend (SQLite, PostgreSQL)."""
from __future__ import annotations

import datetime

from conductor.db.queries import utcnow


def _removal(uuid, **values):
    return dict({"node_uuid": uuid, "node_name": "web", "zone": "lab.test.",
                 "records": [{"label": "web", "fqdn": "web.lab.test.",
                              "addresses": ["10.0.0.1"]}]}, **values)


def test_deleting_a_node_queues_its_removal_in_the_same_transaction(store, make_node):
    node = make_node(name="web")
    store.delete_node(node.id, dns_removal=_removal(node.uuid))
    (row,) = store.list_dns_removals()
    assert (row.node_uuid, row.node_name, row.zone, row.attempts) == (
        node.uuid, "web", "lab.test.", 0)
    assert row.records[0]["addresses"] == ["10.0.0.1"]
    assert store.list_nodes({"uuid": node.uuid}) == []


def test_due_claim_update_delete(store, make_node):
    now = utcnow()
    later = now + datetime.timedelta(seconds=60)
    first, second = make_node(name="a"), make_node(name="b")
    store.delete_node(first.id, dns_removal=_removal(first.uuid, attempts=4))
    store.delete_node(second.id, dns_removal=_removal(second.uuid, next_attempt_at=later))
    # fewest attempts first; only what is due by then
    assert [r.node_uuid for r in store.list_dns_removals()] == [second.uuid, first.uuid]
    (due,) = store.list_dns_removals(due_at=utcnow())
    assert due.node_uuid == first.uuid
    assert store.claim_dns_removal(due.id, utcnow(), later) is True
    assert store.claim_dns_removal(due.id, utcnow(), later) is False   # held until later
    assert store.list_dns_removals(due_at=utcnow()) == []
    store.update_dns_removal(due.id, {"attempts": 5, "last_error": "REFUSED",
                                      "next_attempt_at": now})
    (due,) = store.list_dns_removals(due_at=utcnow())
    assert (due.attempts, due.last_error) == (5, "REFUSED")
    assert due.updated_at is not None
    assert store.delete_dns_removal(due.id) is True
    assert store.delete_dns_removal(due.id) is False
    assert [r.node_uuid for r in store.list_dns_removals()] == [second.uuid]
