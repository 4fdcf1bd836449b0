"""Omaha event reports written in batches (conductor/db/update_events.py) on both
databases: the reports that queue behind a write share one transaction and each
returns only once it is committed; a batch that fails records none of its reports
and each of them raises; an instance keeps its last HISTORY rows."""
from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from conductor.db.update_events import EventRows, StatusChange
from conductor.db.updates import HISTORY, UpdateRows
from conductor.db.write_turns import WriteTurns
from tests.waiting import wait_until

APP = "{7d6a52c5-3e0b-4a5c-9a8e-6d6574616c63}"


class Report(threading.Thread):
    """One report recorded in a thread of its own; what it saw when it returned."""

    def __init__(self, events: EventRows, rows: UpdateRows, changes: list[StatusChange]):
        super().__init__(daemon=True)
        self.events, self.rows, self.changes = events, rows, changes
        self.error: Exception | None = None
        self.history_then: list[str] | None = None
        self.start()

    def run(self) -> None:
        try:
            self.events.record(self.changes)
        except Exception as exc:  # noqa: BLE001 - what the test looks at
            self.error = exc
            return
        # read on another connection: committed by the time record() returned
        self.history_then = [h["status"] for h in
                             self.rows.history(self.changes[0].instance_id)]


@pytest.fixture
def setup(engines):
    engine = engines()
    rows, turns = UpdateRows(engine), WriteTurns()
    commits: list[int] = []
    sa.event.listen(engine, "commit", lambda conn: commits.append(1))
    return rows, EventRows(engine, turns.normal), turns, commits


def _instance(rows: UpdateRows, n: int):
    return rows.add_instance(dict(machineid=f"m{n}", appid=APP, group_name="stable",
                                  version="1.0.0", status="granted",
                                  target_version="2.0.0"))


def _reported(instance_id: int) -> list[StatusChange]:
    return [StatusChange(instance_id, status, "2.0.0")
            for status in ("downloading", "downloaded", "installed")]


def _queue_behind_a_write(events, turns, reports):
    """Start ``reports`` while another write holds the turn; all queued, none back."""
    with turns.urgent:                                 # a lease write in progress
        threads = [Report(*args) for args in reports]
        wait_until(lambda: events.pending() == len(threads))
        assert not any(t.history_then or t.error for t in threads)
    for thread in threads:
        thread.join(60)
    return threads


def test_reports_queued_behind_a_write_are_one_transaction(setup):
    rows, events, turns, commits = setup
    instances = [_instance(rows, n) for n in range(4)]
    complete = StatusChange(instances[3].id, "complete", "2.0.0", running="2.0.0")
    error = StatusChange(instances[2].id, "error", "2.0.0", code=44, text="rollback: x",
                         running="1.0.0")
    before = len(commits)
    threads = _queue_behind_a_write(events, turns, [
        (events, rows, _reported(instances[0].id)),
        (events, rows, _reported(instances[1].id)),
        (events, rows, [error]), (events, rows, [complete])])
    assert len(commits) == before + 1                  # not 4 (nor 8)
    assert [t.error for t in threads] == [None] * 4
    assert threads[0].history_then == ["downloading", "downloaded", "installed"]
    assert threads[2].history_then == ["error"] and threads[3].history_then == ["complete"]
    shown = {i.machineid: i for i in rows.instances()}
    assert [shown[f"m{n}"].status for n in range(4)] == \
        ["installed", "installed", "error", "complete"]
    assert (shown["m2"].error_code, shown["m2"].version) == (44, "1.0.0")
    assert (shown["m3"].version, shown["m3"].error_code) == ("2.0.0", None)
    assert shown["m0"].version == "1.0.0"               # not reported running anything


def test_a_failed_batch_records_none_of_its_reports(setup):
    rows, events, turns, commits = setup
    one, two = _instance(rows, 1), _instance(rows, 2)
    threads = _queue_behind_a_write(events, turns, [
        (events, rows, _reported(one.id)),
        (events, rows, [StatusChange(one.id + two.id + 1000, "downloading", "2.0.0")]),
        (events, rows, _reported(two.id))])            # ^ no such instance: FK refused
    assert all(isinstance(t.error, IntegrityError) for t in threads)
    assert rows.history(one.id) == [] and rows.history(two.id) == []
    assert {i.status for i in rows.instances()} == {"granted"}
    events.record(_reported(one.id))                   # the next batch is written
    assert rows.instance("m1", APP).status == "installed"


def test_the_last_status_and_running_version_win_and_history_is_capped(setup):
    rows, events, _, _ = setup
    instance = _instance(rows, 1)
    changes = [StatusChange(instance.id, "downloading", f"2.0.{n}")
               for n in range(HISTORY + 10)]
    changes[-3] = StatusChange(instance.id, "complete", "2.0.0", running="2.0.0")
    events.record(changes)
    history = rows.history(instance.id)
    assert [h["version"] for h in history] == [c.version for c in changes[-HISTORY:]]
    shown = rows.instance("m1", APP)
    assert (shown.status, shown.version) == ("downloading", "2.0.0")
