"""Held lease acquires (conductor/updates/leases.py + lease_wait.py) over the real
lease rows on both databases: a held acquire is granted when a holder releases, in the
order the waiters came; the waiting room's bounds answer at once beyond them; and
waiters, pollers and releases racing on two engines never exceed the maximum."""
from __future__ import annotations

import random
import threading
import time

from conductor.db.leases import LeaseRows
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
