"""The helper threads of the IPMI channels (conductor/drivers/ipmi/helpers.py): an idle
one takes the next exchange, a busy (or hung) one never delays another, an idle one
ends after its idle time, and every one is a daemon (a hung pyghmi call must not
hold up the process's exit)."""
from __future__ import annotations

import threading

from conductor.drivers.ipmi.helpers import HelperThreads
from tests.waiting import wait_until


def helpers_alive(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(f"{name}-")]


def test_one_helper_runs_exchanges_one_after_another():
    helpers = HelperThreads(name="helpers-sequential")
    ran: list[str] = []
    for index in range(20):
        done = threading.Event()
        helpers.run(lambda i=index, d=done: (ran.append(threading.current_thread().name),
                                             d.set()))
        assert done.wait(10)
        # The helper counts itself idle just after the job returns: a run() in between
        # (a starved helper thread on a loaded machine) rightly starts a second one.
        wait_until(lambda: helpers._idle == 1, message="the helper to be idle again")
    assert len(ran) == 20 and set(ran) == {"helpers-sequential-1"}
    assert [t.daemon for t in helpers_alive("helpers-sequential")] == [True]


def test_a_hung_exchange_does_not_delay_the_next():
    helpers = HelperThreads(name="helpers-hung")
    release, hung_started, other_done = threading.Event(), threading.Event(), threading.Event()
    helpers.run(lambda: (hung_started.set(), release.wait(30)))
    assert hung_started.wait(10)
    helpers.run(other_done.set)
    try:
        assert other_done.wait(10)  # ran on a second helper while the first hangs
        assert len(helpers_alive("helpers-hung")) == 2
    finally:
        release.set()


def test_an_idle_helper_ends():
    helpers = HelperThreads(name="helpers-idle", idle_exit=0.2)
    done = threading.Event()
    helpers.run(done.set)
    assert done.wait(10)
    wait_until(lambda: not helpers_alive("helpers-idle"),
               message="the idle helper did not end")
    again = threading.Event()
    helpers.run(again.set)     # a new one starts for the next exchange
    assert again.wait(10)
