"""Which IPMI session a command reuses: only the one its exact credentials opened,
never older than [ipmi] session_max_age, replaced at once when the BMC drops it.
pyghmi's login is replaced by a fake BMC that knows one password; the real one is
in tests/security/test_ipmi_credentials.py (virtual BMC, real ipmitool)."""
from __future__ import annotations

import pytest
from pyghmi import exceptions as pyghmi_exc

from conductor import errors
from conductor.config import from_options
from conductor.drivers.ipmi import client as ipmi_client
from conductor.drivers.ipmi.client import BmcAddress, BmcChannels

GOOD = BmcAddress("127.0.0.1", 6230, "admin", "pw-good", 4)
WRONG = BmcAddress("127.0.0.1", 6230, "admin", "pw-wrong", 4)


class FakeSession:
    def __init__(self):
        self.logged, self.broken = 1, False

    def logout(self):
        self.logged, self.broken = 0, True


class FakeCommand:
    def __init__(self):
        self.ipmi_session = FakeSession()
        self.dropped = False   # the BMC forgot the session: pyghmi finds out on the next use

    def raw_command(self, netfn, command, data=()):
        if self.dropped:
            self.ipmi_session.logout()
        if self.ipmi_session.broken:
            raise pyghmi_exc.IpmiException("Session no longer connected")
        return {"code": 0, "data": b"\x01"}


class FakeBmc:
    """What the fake pyghmi login checks against; records every login attempt."""

    def __init__(self, password: str):
        self.password = password
        self.logins: list[str] = []
        self.sessions: list[FakeCommand] = []

    def open(self, bmc: BmcAddress) -> FakeCommand:
        self.logins.append(bmc.password)
        if bmc.password != self.password:
            raise pyghmi_exc.IpmiException("Incorrect password provided")
        self.sessions.append(FakeCommand())
        return self.sessions[-1]


@pytest.fixture
def fake_bmc(monkeypatch):
    bmc = FakeBmc("pw-good")
    monkeypatch.setattr(ipmi_client, "_open", bmc.open)
    return bmc


def channels_for(**options) -> BmcChannels:
    base = {"ipmi.min_command_interval": 0, "ipmi.command_timeout": 5,
            "ipmi.command_retry_timeout": 0, "ipmi.login_timeout": 5}
    return BmcChannels(from_options({**base, **{f"ipmi.{k}": v for k, v in options.items()}}))


def status(channels: BmcChannels, bmc: BmcAddress) -> bytes:
    return channels.get(bmc).call(bmc, "get chassis status", 0, 1)


def test_wrong_password_never_rides_on_another_nodes_session(fake_bmc):
    channels = channels_for()
    assert status(channels, GOOD) == b"\x01"
    with pytest.raises(errors.DriverError, match="rejected the password"):
        status(channels, WRONG)
    # The rejected login dropped nothing: the good session is used again, no login.
    assert status(channels, GOOD) == b"\x01"
    assert fake_bmc.logins == ["pw-good", "pw-wrong"]
    assert not fake_bmc.sessions[0].ipmi_session.broken
    # Both credentials go through one line per BMC: one lock, one spacing.
    assert channels.get(GOOD) is channels.get(WRONG)


def test_the_sessions_table_holds_no_password(fake_bmc):
    channels = channels_for()
    status(channels, GOOD)
    table = channels.get(GOOD)._sessions
    assert len(table) == 1 and "pw-good" not in repr(table)


def test_a_session_the_bmc_dropped_is_replaced_by_a_login_at_once(fake_bmc):
    channels = channels_for()      # command_retry_timeout = 0: no retry budget at all
    status(channels, GOOD)
    # The BMC restarted with a new password: it forgot the session.
    fake_bmc.password = "pw-changed"
    fake_bmc.sessions[0].dropped = True
    with pytest.raises(errors.DriverError, match="rejected the password"):
        status(channels, GOOD)
    assert fake_bmc.logins == ["pw-good", "pw-good"]
    # With the node's new password the next command logs in and works.
    assert status(channels, BmcAddress("127.0.0.1", 6230, "admin", "pw-changed", 4)) == b"\x01"


def test_a_session_past_its_age_logs_in_again_and_sees_a_changed_password(fake_bmc):
    channels = channels_for(session_max_age=300)
    status(channels, GOOD)
    status(channels, GOOD)
    assert fake_bmc.logins == ["pw-good"]
    # The BMC's password changed but the BMC kept the session (many do).
    fake_bmc.password = "pw-changed"
    assert status(channels, GOOD) == b"\x01"     # within the age: the old session
    for session in channels.get(GOOD)._sessions.values():
        session.opened -= 300                   # its age is up (no waiting in tests)
    with pytest.raises(errors.DriverError, match="rejected the password"):
        status(channels, GOOD)
    assert fake_bmc.logins == ["pw-good", "pw-good"]
    assert fake_bmc.sessions[0].ipmi_session.broken  # logged out before the new login


def test_max_age_zero_logs_in_for_every_command(fake_bmc):
    channels = channels_for(session_max_age=0)
    status(channels, GOOD)
    status(channels, GOOD)
    assert fake_bmc.logins == ["pw-good", "pw-good"]
    assert all(s.ipmi_session.broken for s in fake_bmc.sessions)  # each logged out
    assert not channels.get(GOOD)._sessions
