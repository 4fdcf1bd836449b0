"""The unit tier's guard (tests/unit/conftest.py) refuses threads, server sockets and
processes, so a test that needs them cannot land in tests/unit/ by mistake."""
from __future__ import annotations

import os
import socket
import subprocess
import threading

import pytest

from tests.unit.conftest import UnitTierViolation


def test_a_thread_a_server_socket_and_a_process_are_refused(no_threads_sockets_or_processes):
    refused = no_threads_sockets_or_processes
    ran = []
    with pytest.raises(UnitTierViolation, match="started a thread: a unit test uses fakes"):
        threading.Thread(target=ran.append, args=(1,)).start()
    with socket.socket() as sock:
        with pytest.raises(UnitTierViolation, match="bound a socket"):
            sock.bind(("127.0.0.1", 0))
        with pytest.raises(UnitTierViolation, match="listened on a socket"):
            sock.listen()
    with pytest.raises(UnitTierViolation, match="ran a process"):
        subprocess.run(["true"], check=False)
    with pytest.raises(UnitTierViolation, match=r"ran a process \(os.system\)"):
        os.system("true")
    assert ran == []
    assert refused == ["started a thread", "bound a socket", "listened on a socket",
                       "ran a process", "ran a process (os.system)"]
    refused.clear()   # refusals this test provoked on purpose


def test_a_refusal_is_not_an_exception_production_code_can_swallow():
    assert not issubclass(UnitTierViolation, Exception)
    assert issubclass(UnitTierViolation, BaseException)
