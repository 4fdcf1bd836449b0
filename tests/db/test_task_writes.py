"""Task.merged_writes (conductor/engine/task.py) on the real Store: the updates of a
block reach the row in one UPDATE when it ends, also when it raises; the task's
node has them at once; update_now and release inside a block write what it holds."""
from __future__ import annotations

import pytest
from sqlalchemy import event

from conductor.db.records import Node
from conductor.engine.task import Task


def _task(store, make_node) -> Task:
    node = make_node(name="n", provision_state="deploying", instance_info={"a": 1})
    store.reserve(node, "c1")
    return Task(store, store.get_node_by_id(node.id), "c1", drivers=None)


@pytest.fixture
def updates(store):
    """UPDATE statements sent to the nodes table."""
    seen: list[str] = []

    def count(conn, cursor, statement, *args):
        if statement.lstrip().upper().startswith("UPDATE NODES"):
            seen.append(statement)
    event.listen(store.engine, "before_cursor_execute", count)
    yield seen
    event.remove(store.engine, "before_cursor_execute", count)


def test_merged_updates_are_one_update_at_the_end(store, make_node, updates):
    task = _task(store, make_node)
    updates.clear()                                  # the reserve
    with task.merged_writes():
        task.update(last_error="one", instance_info={"a": 2})
        with task.merged_writes():                   # nested: joins the outer block
            task.update(last_error="two", deploy_step={"step": "x"})
        assert task.node.last_error == "two"         # the task sees them at once
        assert store.get_node_by_id(task.node.id).last_error is None
        assert updates == []
    row = store.get_node_by_id(task.node.id)
    assert (row.last_error, row.instance_info, row.deploy_step) == (
        "two", {"a": 2}, {"step": "x"})
    assert len(updates) == 1


def test_a_block_that_raises_still_writes(store, make_node):
    task = _task(store, make_node)
    with pytest.raises(RuntimeError), task.merged_writes():
        task.update(last_error="recorded before the failure")
        raise RuntimeError("BMC gone")
    assert store.get_node_by_id(task.node.id).last_error == "recorded before the failure"


def test_update_now_and_release_write_what_the_block_holds(store, make_node, updates):
    task = _task(store, make_node)
    updates.clear()                                  # the reserve
    with task.merged_writes():
        task.update(last_error="held")
        task.update_now(deploy_step={"step": "now"})
        row = store.get_node_by_id(task.node.id)
        assert (row.last_error, row.deploy_step) == ("held", {"step": "now"})
        task.update(instance_info={"a": 3})
        task.release()
        row = store.get_node_by_id(task.node.id)
        assert (row.reservation, row.instance_info) == (None, {"a": 3})
    assert len(updates) == 2                         # nothing left for the block end
    assert isinstance(task.node, Node) and task.node.reservation is None
