"""The process's write turns (conductor/db/write_turns.py): one writer at a time, and
a lease write that waits goes before the event reports that waited longer."""
from __future__ import annotations

import threading

from conductor.db.write_turns import WriteTurns
from tests.waiting import wait_until


def test_an_urgent_writer_goes_before_normal_writers_that_waited_longer():
    turns = WriteTurns()
    order: list[str] = []

    def write(name: str, turn) -> None:
        with turn:
            order.append(name)
    with turns.normal:                                  # an event batch being written
        first = threading.Thread(target=write, args=("events", turns.normal))
        first.start()
        wait_until(lambda: turns.waiting() == (0, 1))
        second = threading.Thread(target=write, args=("lease", turns.urgent))
        second.start()
        wait_until(lambda: turns.waiting() == (1, 1))
        assert order == []                              # nobody writes meanwhile
    first.join(10)
    second.join(10)
    assert order == ["lease", "events"]
    assert turns.waiting() == (0, 0)


def test_one_writer_at_a_time():
    turns = WriteTurns()
    inside, most = [0], [0]
    lock = threading.Lock()

    def write(turn) -> None:
        for _ in range(200):
            with turn:
                with lock:
                    inside[0] += 1
                    most[0] = max(most[0], inside[0])
                with lock:
                    inside[0] -= 1
    threads = [threading.Thread(target=write, args=(turn,)) for turn in
               (turns.urgent, turns.normal, turns.urgent, turns.normal)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert most[0] == 1
