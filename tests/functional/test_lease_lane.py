"""Lease requests have their own lane in the API server (api/updates/__init__.py
LEASE_PATHS, run on the listener's stream threads): a fleet's storm of update checks
fills the worker threads and their queue, and the releases and acquires that the
roll-out's progress waits on must not wait behind it (bench/rollout.py)."""
from __future__ import annotations

import threading

import pytest
import requests

from api.server import Server
from conductor import config
from tests.waiting import wait_until

THREADS = 8     # Server's default worker threads


@pytest.fixture
def server(tmp_path):
    settings = config.load(overrides={"data_dir": str(tmp_path), "api.port": 0,
                                      "pxe.enabled": False, "patching.listen_port": 0},
                           env={})
    srv = Server(settings, threads=THREADS)
    yield srv
    srv.close()


def test_a_lease_request_is_answered_while_update_checks_hold_every_worker(server):
    updates = server.appliance.service.updates
    check, go_on = updates.update_check, threading.Event()
    inside: list[int] = []

    def held_check(*args, **kwargs):
        inside.append(1)
        go_on.wait(120)
        return check(*args, **kwargs)
    updates.update_check = held_check             # the check path, saturated at will
    server.start_in_thread()
    answers: dict[str, list[int]] = {"check": [], "lease": []}

    def post(kind: str, path: str, **kwargs) -> None:
        answers[kind].append(requests.post(f"{server.url}{path}", timeout=120,
                                           **kwargs).status_code)
    checks = [threading.Thread(target=post, args=("check", "/v1/update/"), daemon=True,
                               kwargs={"data": b"<request/>"}) for _ in range(THREADS + 4)]
    try:
        for thread in checks:
            thread.start()
        wait_until(lambda: len(inside) == THREADS)   # every worker holds a check
        lease = threading.Thread(target=post, args=("lease", "/updates/v1/leases"),
                                 kwargs={"json": {"node": "no-such-node", "agent_token":
                                                  "x", "action": "release"}}, daemon=True)
        lease.start()
        wait_until(lambda: answers["lease"])
        # answered (the token is checked) while every check is held or queued
        assert answers == {"check": [], "lease": [401]} and len(inside) == THREADS
    finally:
        go_on.set()
        for thread in checks:
            thread.join(120)
    assert len(answers["check"]) == THREADS + 4 and len(inside) == THREADS + 4
