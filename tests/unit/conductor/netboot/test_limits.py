"""Boot server limits: the [pxe] options and the HTTP connection table's admission.

Sockets are fakes that record ``shutdown`` (the table's only call on them); the
servers applying the table are attacked for real in tests/security/.
"""
from __future__ import annotations

import pytest

from conductor import errors
from conductor.config import from_options
from conductor.netboot.limits import ConnectionTable, HttpLimits, TftpLimits, from_pxe_settings
from conductor.netboot.services import NetbootServices


class FakeSocket:
    def __init__(self, name: str):
        self.name, self.shut = name, False

    def shutdown(self, how) -> None:
        self.shut = True

    def __repr__(self) -> str:
        return self.name


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0  # every event is one "second" later than the last
        return self.now


def table(connections=4, per_client=2) -> ConnectionTable:
    return ConnectionTable(HttpLimits(connections, per_client, 15.0), Clock())


def test_defaults_match_the_pxe_options(tmp_path):
    settings = from_options({"data_dir": str(tmp_path)})
    assert from_pxe_settings(settings.pxe) == (HttpLimits(), TftpLimits())


@pytest.mark.parametrize("option", ["pxe.http_max_connections", "pxe.tftp_sessions_per_client",
                                    "pxe.tftp_max_timeout", "pxe.http_idle_timeout",
                                    "pxe.http_header_timeout"])
@pytest.mark.parametrize("value", [0, -1])
def test_non_positive_limits_stop_the_start(tmp_path, option, value):
    settings = from_options({"data_dir": str(tmp_path), option: value})
    with pytest.raises(errors.ConfigError, match=f"\\[pxe\\] {option.split('.')[1]} must be"):
        NetbootServices(settings)


def test_a_client_over_its_cap_replaces_its_own_longest_idle_connection():
    conns = table()
    a1, a2, a3, b1 = (FakeSocket(n) for n in ("a1", "a2", "a3", "b1"))
    assert conns.admit(b1, "b") is None
    assert conns.admit(a1, "a") is None and conns.admit(a2, "a") is None
    assert conns.admit(a3, "a") is None
    assert a1.shut and not a2.shut and not b1.shut and len(conns) == 3
    conns.release(a1)  # its thread ends later: a no-op for the evicted one
    assert len(conns) == 3


def test_a_client_whose_connections_all_serve_is_refused():
    conns = table()
    a1, a2 = FakeSocket("a1"), FakeSocket("a2")
    conns.admit(a1, "a"), conns.admit(a2, "a")
    conns.busy(a1), conns.busy(a2)
    assert conns.admit(FakeSocket("a3"), "a") == "too many connections from a"
    assert not a1.shut and not a2.shut and len(conns) == 2
    conns.idle(a2)  # between two kept-alive requests: may make room again
    assert conns.admit(FakeSocket("a4"), "a") is None and a2.shut


def test_the_total_cap_closes_the_longest_idle_of_any_client():
    conns = table(connections=3, per_client=3)
    a, b, c = FakeSocket("a"), FakeSocket("b"), FakeSocket("c")
    for sock in (a, b, c):
        conns.admit(sock, sock.name)
    conns.busy(a)
    conns.idle(b)  # b is now more recently idle than c
    d = FakeSocket("d")
    assert conns.admit(d, "d") is None
    assert c.shut and not a.shut and not b.shut and len(conns) == 3


def test_the_total_cap_refuses_when_everything_is_busy():
    conns = table(connections=2, per_client=2)
    socks = [FakeSocket(f"s{i}") for i in range(2)]
    for sock in socks:
        conns.admit(sock, "x" + sock.name)
        conns.busy(sock)
    assert conns.admit(FakeSocket("new"), "new") == "too many connections"
    assert not any(s.shut for s in socks)
    conns.release(socks[0])
    assert conns.admit(FakeSocket("new"), "new") is None


def test_close_all_shuts_every_connection():
    conns = table()
    socks = [FakeSocket(f"s{i}") for i in range(3)]
    for i, sock in enumerate(socks):
        conns.admit(sock, f"c{i}")
    conns.close_all()
    assert all(s.shut for s in socks)


def test_the_http_header_timeout_comes_from_pxe(tmp_path):
    settings = from_options({"data_dir": str(tmp_path), "pxe.http_header_timeout": 2.5})
    assert from_pxe_settings(settings.pxe)[0].header_timeout == 2.5
