"""How the IPMI and Redfish clients bound their concurrency: the shared login
semaphore and login budget of ipmi_client, the HTTP pool size of the Redfish
client. pyghmi's login is replaced by a fake here; the real one is exercised in
tests/functional/test_ipmi*.py."""
import threading
import time
import types

import pytest
import requests

from conductor import errors
from conductor.config import from_options
from conductor.drivers.ipmi import client as ipmi_client
from conductor.drivers.ipmi.client import BmcAddress, BmcChannels
from conductor.drivers.redfish import client as redfish_client


class FakeSession:
    logged, broken = 1, False


class FakeCommand:
    """What _open returns: a logged-in session answering chassis status."""

    def __init__(self):
        self.ipmi_session = FakeSession()

    def raw_command(self, netfn, command, data=()):
        return {"code": 0, "data": b"\x01"}


def settings(options: dict | None = None):
    base = {"ipmi.min_command_interval": 0, "ipmi.command_timeout": 5,
            "ipmi.command_retry_timeout": 0.1, "ipmi.login_timeout": 5,
            "ipmi.max_concurrent_logins": 2}
    return from_options({**base, **(options or {})})


def bmc(port):
    return BmcAddress("127.0.0.1", port, "admin", "pw", 4)


def test_logins_beyond_the_limit_wait_and_sessions_are_reused(monkeypatch):
    state = {"now": 0, "max": 0, "logins": 0}
    lock = threading.Lock()
    two_in = threading.Event()

    def slow_open(address):
        with lock:
            state["now"] += 1
            state["logins"] += 1
            state["max"] = max(state["max"], state["now"])
            if state["now"] == 2:
                two_in.set()
        # Two logins overlap whatever the scheduling (a starved thread could otherwise
        # start after the first login ended, and the test saw one at a time).
        two_in.wait(10)
        time.sleep(0.1)   # a slow BMC login (the behaviour under test), not a wait
        with lock:
            state["now"] -= 1
        return FakeCommand()

    monkeypatch.setattr(ipmi_client, "_open", slow_open)
    channels = BmcChannels(settings())
    threads = [threading.Thread(target=lambda p=p: channels.get(bmc(p)).call(
        bmc(p), "status", 0, 1)) for p in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert state["max"] == 2 and state["logins"] == 6
    # A live session is used again: no second login.
    assert channels.get(bmc(0)).call(bmc(0), "status", 0, 1) == b"\x01"
    assert state["logins"] == 6


def test_a_login_gets_the_shorter_login_budget(monkeypatch):
    release, ended = threading.Event(), threading.Event()

    def hanging_open(address):
        release.wait(20)      # a login that gets no answer for 20 s, then fails
        ended.set()
        raise OSError("gone")

    monkeypatch.setattr(ipmi_client, "_open", hanging_open)
    channels = BmcChannels(settings({"ipmi.login_timeout": 0.2, "ipmi.command_timeout": 60}))
    try:
        # Given up while the login still hangs, with the login's budget named. Waiting
        # out the command's budget (60 s) instead would outlast the hang and end in
        # its failure, with `ended` set. No duration is measured: a loaded machine may
        # stretch 0.2 s, never to the 20 s of the hang.
        with pytest.raises(errors.DriverError,
                           match=r"login .* within 0.2 s \(\[ipmi\] login_timeout\)"):
            channels.get(bmc(1)).call(bmc(1), "status", 0, 1)
        assert not ended.is_set()
    finally:
        release.set()


def test_a_failed_login_frees_its_slot(monkeypatch):
    calls = []

    def refusing_open(address):
        calls.append(address.port)
        raise OSError("refused")

    monkeypatch.setattr(ipmi_client, "_open", refusing_open)
    channels = BmcChannels(settings({"ipmi.max_concurrent_logins": 1}))
    for port in (1, 2, 3):  # with a leaked slot the 2nd would wait, then fail "in progress"
        with pytest.raises(errors.DriverError, match="Cannot reach BMC"):
            channels.get(bmc(port)).call(bmc(port), "status", 0, 1)
    assert calls == [1, 2, 3]


def test_login_concurrency_is_at_least_one():
    assert ipmi_client.login_concurrency(settings({"ipmi.max_concurrent_logins": 0})) == 1


def test_redfish_pool_is_sized_for_the_threads_that_share_it():
    s = from_options({"conductor.sync_power_state_workers": 32, "conductor.workers": 16})
    assert redfish_client.pool_size(s) == 48
    assert redfish_client.pool_size(from_options({"conductor.sync_power_state_workers": 1,
                                                  "conductor.workers": 1})) == 10
    session = requests.Session()
    root = types.SimpleNamespace(_conn=types.SimpleNamespace(_session=session))
    redfish_client._size_pool(root, 48)
    for scheme in ("http://", "https://"):
        assert session.get_adapter(scheme)._pool_maxsize == 48


def test_wakeup_fix_bounds_only_the_wait_for_an_answer(monkeypatch):
    from pyghmi.ipmi.private import session as pyghmi_session
    seen = []
    monkeypatch.setattr(pyghmi_session, "_io_wait",
                        lambda timeout, myaddr=None, evq=None: seen.append(timeout))
    ipmi_client.install_wakeup_fix()
    ipmi_client.install_wakeup_fix()  # idempotent: one wrapper, not two
    pyghmi_session._io_wait(1.5, ("127.0.0.1", 623))  # awaitresponse
    pyghmi_session._io_wait(1.5)                       # the login event loop
    pyghmi_session._io_wait(1.5, ("127.0.0.1", 623), [])  # waiting for our turn
    assert seen == [ipmi_client.WAKEUP_SLICE, 1.5, 1.5]
