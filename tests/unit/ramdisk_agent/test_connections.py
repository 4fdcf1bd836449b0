"""The agent's connection table: caps in total and per client, the longest-idle
connection makes room, a busy one never does. Sockets are fakes whose descriptor
``shutdown`` records (tests/security/test_agent_limits.py floods the real server)."""
from __future__ import annotations

import socket

import pytest

from ramdisk_agent import connections
from ramdisk_agent.connections import Connections


class FakeSocket:
    def __init__(self, name: str):
        self.name, self.shut = name, False

    def __repr__(self) -> str:
        return self.name


@pytest.fixture(autouse=True)
def recorded_shutdown(monkeypatch):
    def shutdown(sock, how):
        assert how == socket.SHUT_RDWR
        sock.shut = True
    monkeypatch.setattr(connections.socket.socket, "shutdown", shutdown)


def test_per_client_cap_closes_the_clients_own_longest_idle():
    table = Connections(total=8, per_client=2)
    a1, a2, a3, b1 = (FakeSocket(n) for n in ("a1", "a2", "a3", "b1"))
    for sock, client in ((a1, "a"), (b1, "b"), (a2, "a")):
        assert table.admit(sock, client)
    assert table.admit(a3, "a")
    assert a1.shut and not a2.shut and not b1.shut and len(table) == 3


def test_busy_connections_are_never_closed_for_a_newcomer():
    table = Connections(total=2, per_client=2)
    a, b = FakeSocket("a"), FakeSocket("b")
    table.admit(a, "a"), table.admit(b, "b")
    table.busy(a), table.busy(b)
    assert not table.admit(FakeSocket("c"), "c")
    table.idle(b)
    assert table.admit(FakeSocket("c"), "c") and b.shut and not a.shut


def test_rekey_follows_the_tls_socket_and_closes_one_evicted_meanwhile():
    table = Connections(total=1, per_client=1)
    raw, tls = FakeSocket("raw"), FakeSocket("tls")
    table.admit(raw, "a")
    table.rekey(raw, tls)
    table.busy(tls)
    assert not table.admit(FakeSocket("b"), "b")  # tls is busy: tracked under its new key
    table.idle(tls)
    other_raw, other_tls = FakeSocket("raw2"), FakeSocket("tls2")
    table.admit(other_raw, "b")                 # closes tls, the longest idle
    assert tls.shut
    table.admit(FakeSocket("raw3"), "c")        # closes raw2 before its TLS socket exists
    table.rekey(other_raw, other_tls)
    assert other_tls.shut and len(table) == 1


def test_release_forgets_and_ignores_unknown_sockets():
    table = Connections(total=2, per_client=2)
    sock = FakeSocket("s")
    table.admit(sock, "a")
    table.release(sock)
    table.release(sock)
    table.busy(sock)
    assert len(table) == 0
