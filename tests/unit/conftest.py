"""The unit tier stays honest: a unit test that starts a thread, binds or listens on a
socket, or runs a process fails, naming what it started.

Such a test belongs in tests/integration/ (the appliance or a server in-process) or
tests/functional/ (real processes and peers). The guard raises a ``BaseException`` so
that production code's ``except Exception`` cannot swallow it, and fails the test at
teardown too if the raise was swallowed anyway.
"""
from __future__ import annotations

import concurrent.futures
import os
import socket
import subprocess
import threading

import pytest


class UnitTierViolation(BaseException):
    """A unit test started a thread, a server socket or a process."""


#: Whether the test's call phase failed (the guard's teardown check skips those).
_CALL_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call":
        item.stash[_CALL_FAILED] = report.failed
    return report


@pytest.fixture(autouse=True)
def no_threads_sockets_or_processes(request, monkeypatch):
    """Patch the ways to start a thread, a server socket or a process for one test;
    the list of refusals so far (a test of the guard itself clears it)."""
    seen: list[str] = []

    def refuse(what: str):
        def refused(*args, **kwargs):
            seen.append(what)
            raise UnitTierViolation(
                f"unit test {request.node.nodeid} {what}: a unit test uses fakes and "
                "recorded payloads only; move it to tests/integration/ or "
                "tests/functional/")
        return refused

    monkeypatch.setattr(threading.Thread, "start", refuse("started a thread"))
    monkeypatch.setattr(socket.socket, "bind", refuse("bound a socket"))
    monkeypatch.setattr(socket.socket, "listen", refuse("listened on a socket"))
    monkeypatch.setattr(subprocess.Popen, "_execute_child", refuse("ran a process"))
    for name in ("system", "fork", "forkpty", "posix_spawn", "posix_spawnp"):
        if hasattr(os, name):
            monkeypatch.setattr(os, name, refuse(f"ran a process (os.{name})"))
    yield seen
    if seen and request.node.stash.get(_CALL_FAILED, True) is False:
        pytest.fail(f"{request.node.nodeid} {seen[0]} (the code under test swallowed "
                    "the refusal)", pytrace=False)


class InlineExecutor(concurrent.futures.Executor):
    """A ``ThreadPoolExecutor`` stand-in that runs each task at ``submit``: the result
    the code under test computes is the same, without a thread."""

    def __init__(self, max_workers=None, *args, **kwargs):
        self.max_workers = max_workers

    def submit(self, fn, /, *args, **kwargs):
        future = concurrent.futures.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as exc:  # noqa: BLE001 - as a pool does; a UnitTierViolation still escapes
            future.set_exception(exc)
        return future


@pytest.fixture()
def inline_thread_pools(monkeypatch):
    """Code that fans work out to a ``concurrent.futures.ThreadPoolExecutor`` runs it
    inline instead (use where the pool is an implementation detail, not the subject)."""
    monkeypatch.setattr(concurrent.futures, "ThreadPoolExecutor", InlineExecutor)
