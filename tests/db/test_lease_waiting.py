"""Held lease acquires (conductor/updates/leases.py + lease_wait.py) over the real
lease rows on both databases: a held acquire is granted when a holder releases, in the
order the waiters came; the waiting room's bounds answer at once beyond them; and
waiters, pollers and releases racing on two engines never exceed the maximum."""
from __future__ import annotations

import random
import threading
import time

import sqlalchemy as sa

from conductor.db.leases import LeaseRows
from conductor.db.schema import update_lease_groups
from conductor.updates.lease_wait import WaitingRoom
from conductor.updates.leases import RebootLeases
from tests.waiting import wait_until


def leases(engine, most: int = 64) -> RebootLeases:
    return RebootLeases(LeaseRows(engine), lambda node, token: node, lambda host: host,
                        300.0, WaitingRoom(most))


def body(node: str, action: str = "acquire", wait: float = 0, group: str = "g") -> dict:
    doc = {"node": node, "agent_token": "t", "action": action, "group": group}
    return dict(doc, wait=wait) if wait else doc


class Held(threading.Thread):
    """One acquire with ``wait`` in a thread of its own: ``answer`` when it returns."""

    def __init__(self, service: RebootLeases, node: str, wait: float = 60):
        super().__init__(daemon=True)
        self.service, self.node, self.wait = service, node, wait
        self.answer: tuple[int, dict] | None = None
        self.start()

    def run(self) -> None:
        self.answer = self.service.request(body(self.node, wait=self.wait))


def test_a_held_acquire_is_granted_when_the_holder_releases(engines):
    service = leases(engines())
    service.set_max("g", 1)
    assert service.request(body("a"))[0] == 200
    waiter = Held(service, "b")
    wait_until(lambda: service.room.waiting("g") == 1)
    assert waiter.answer is None                       # held, not refused
    assert service.request(body("a", "release"))[0] == 200
    waiter.join(60)
    assert waiter.answer is not None and waiter.answer[0] == 200
    assert waiter.answer[1]["held"] and waiter.answer[1]["holder"] == "b"
    assert service.room.waiting() == 0


def test_waiters_go_first_in_order_and_the_bounds_answer_at_once(engines):
    service = leases(engines(), most=2)
    service.set_max("g", 1)
    assert service.request(body("a"))[0] == 200
    first = Held(service, "b")
    wait_until(lambda: service.room.waiting("g") == 1)
    second = Held(service, "c")
    wait_until(lambda: service.room.waiting("g") == 2)
    # the room is full, and b already waits: both answered at once, as polls are
    assert service.request(body("d", wait=60))[0] == 409
    assert service.request(body("b", wait=60))[0] == 409
    assert service.request(body("a", "release"))[0] == 200
    first.join(60)
    assert first.answer is not None and first.answer[0] == 200       # b came first
    assert second.answer is None and service.room.waiting("g") == 1
    # b's release goes to c, the next waiter
    assert service.request(body("b", "release"))[0] == 200
    second.join(60)
    assert second.answer is not None and second.answer[0] == 200
    assert service.request(body("d"))[0] == 409                        # c holds it


def test_waiters_pollers_and_releases_on_two_engines_never_exceed_max(engines):
    maximum, hosts = 2, 10
    one, two = leases(engines()), leases(engines())
    one.set_max("race", maximum)
    seen, done, lock = [], threading.Event(), threading.Lock()
    granted: list[str] = []

    def host(n: int) -> None:
        service, node = (one, two)[n % 2], f"node-{n}"
        while True:
            wait = 30 if n % 3 else 0                  # every third host only polls
            status, answer = service.request(body(node, wait=wait, group="race"))
            with lock:
                seen.append(answer["holders"])
            if status == 200:
                break
            time.sleep(random.uniform(0, 0.05))
        with lock:
            granted.append(node)
        time.sleep(random.uniform(0, 0.05))            # the reboot
        service.request(body(node, "release", group="race"))

    def sample() -> None:
        while not done.is_set():
            held = one.status()[0]["holders"]
            with lock:
                seen.append(len(held))
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    threads = [threading.Thread(target=host, args=(n,), daemon=True) for n in range(hosts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    done.set()
    sampler.join(30)
    assert sorted(granted) == sorted(f"node-{n}" for n in range(hosts))
    assert max(seen) <= maximum and max(seen) >= 1
    assert one.room.waiting() == two.room.waiting() == 0


def test_a_hand_over_never_passes_the_maximum(engines):
    rows = LeaseRows(engines())
    rows.set_max("g", 2)
    assert rows.acquire("g", "a", 300).held and rows.acquire("g", "b", 300).held
    rows.set_max("g", 1)                               # lowered while both hold
    released, granted = rows.hand_over("g", "a", "c", 300)
    assert granted is None and released.holders == 1   # b still holds: no room for c
    released, granted = rows.hand_over("g", "b", "c", 300)
    assert granted is not None and granted.held and granted.holders == 1
    assert [lease.holder for lease in rows.status()[0][2]] == ["c"]


def test_releases_queued_behind_a_lease_write_are_written_in_one_transaction(engines):
    """A round's releases arrive together: those that queue while another lease write
    runs share the next transaction, and the hand-overs in it still stop at max."""
    engine = engines()
    rows = LeaseRows(engine)
    rows.set_max("g", 4)
    for holder in "abcd":
        assert rows.acquire("g", holder, 300).held
    rows.set_max("g", 3)                               # lowered while four hold
    generation = sa.select(update_lease_groups.c.generation).where(
        update_lease_groups.c.name == "g")     # + 1 in each lease write transaction
    with engine.connect() as conn:
        before = conn.execute(generation).scalar_one()
    answers: dict[str, tuple] = {}

    def release(holder: str, successor: str | None) -> None:
        answers[holder] = rows.hand_over("g", holder, successor, 300)
    with rows._writing:                                # a lease write in progress
        threads = [threading.Thread(target=release, args=args, daemon=True) for args in
                   (("a", "w"), ("b", None), ("c", "x"), ("d", "y"), ("e", "z"))]
        for queued, thread in enumerate(threads, 1):   # queued in this order
            thread.start()
            wait_until(lambda n=queued: rows.pending_releases() == n)
    for thread in threads:
        thread.join(60)
    with engine.connect() as conn:
        assert conn.execute(generation).scalar_one() == before + 1   # not 5
    # a b c d e released (e held nothing): 0 holders; w x y handed the room of max 3
    assert [answers[h][1] is not None for h in "abcde"] == [True, False, True, True,
                                                            False]
    assert sorted(lease.holder for lease in rows.status()[0][2]) == ["w", "x", "y"]
    assert answers["d"][1].holders == 3 and answers["b"][0].holders == 0
