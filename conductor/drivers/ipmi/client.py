"""The one place metalcast talks IPMI: pyghmi sessions behind per-BMC channels.

A ``BmcChannel`` serialises commands to one BMC (address:port), spaces them by
``[ipmi] min_command_interval``, retries busy/timeout answers until
``[ipmi] command_retry_timeout``, and bounds every exchange by
``[ipmi] command_timeout`` even when pyghmi itself blocks. Every pyghmi failure
becomes a ``DriverError`` here, phrased so an operator knows what to fix.
The channels live in the DriverContext (``context.bmc_channels``), not in globals.

A session is reused only for the exact credentials that opened it: a channel keeps
its sessions by ``SessionKey`` (address, port, user name and a keyed hash of the
password and privilege level; never the password itself), so a node with a wrong
password logs in (and fails) on its own, whatever session another node holds to the
same BMC. Ironic's ipmitool logs in for every command; a session here lives at most
``[ipmi] session_max_age`` seconds, and one the BMC dropped (restarted, password
changed, session evicted) is replaced at once by a login with the node's current
credentials, so a changed password is reported, not hidden by an old session.
"""
from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import logging
import os
import threading
import time
from typing import Any, NamedTuple

from pyghmi import exceptions as pyghmi_exc
from pyghmi.ipmi import command as pyghmi_command
from pyghmi.ipmi.private import session as pyghmi_session

from conductor import errors
from conductor.drivers.ipmi.helpers import HelperThreads

LOG = logging.getLogger(__name__)

#: Completion codes a BMC uses while it is temporarily unable to serve (retry).
RETRYABLE_CODES = {0xC0: "node busy", 0xC3: "timeout while processing",
                   0xC4: "out of storage space", 0xD2: "BMC initialisation in progress",
                   0xFFFF: "no answer (timeout)"}
#: Completion codes meaning "this BMC cannot do that" (do not retry).
UNSUPPORTED_CODES = {0x80: "parameter not supported", 0xC1: "invalid command",
                     0xC2: "invalid command for LUN", 0xC9: "parameter out of range",
                     0xCC: "invalid data field in request",
                     0xD5: "command not supported in present state",
                     0xD6: "subfunction disabled or unavailable"}
CODE_INSUFFICIENT_PRIVILEGE = 0xD4
#: Seconds shutdown waits for logouts (a dead BMC must not delay it).
LOGOUT_WAIT = 3.0
#: Longest a command waits before looking at its queued packets again (see
#: install_wakeup_fix).
WAKEUP_SLICE = 0.02

#: pyghmi login error text (substring) -> (kind, what the operator should check).
LOGIN_ERRORS = (
    ("Incorrect password", "credentials",
     "the BMC rejected the password: check ipmi_password (and ipmi_username)"),
    ("Unauthorized name", "credentials",
     "the BMC does not know this user: check ipmi_username"),
    ("Unauthorized role", "credentials",
     "the user may not log in at this privilege: check ipmi_priv_level"),
    ("Invalid role", "credentials",
     "the user may not log in at this privilege: check ipmi_priv_level"),
    ("Insufficient resources", "retry",
     "the BMC has no free session slot (too many open sessions)"),
    ("Invalid RAKP4 integrity", "credentials",
     "the BMC and this conductor disagree on the session key: check ipmi_password"),
)


class _Retryable(Exception):
    """A failure worth another attempt; carries the operator-facing reason."""


class _SessionLost(_Retryable):
    """A reused session stopped working: log in again at once (see BmcChannel.call)."""


@dataclasses.dataclass(frozen=True)
class BmcAddress:
    """Where and as whom to reach one BMC (parsed from driver_info)."""

    host: str
    port: int
    username: str
    password: str = dataclasses.field(repr=False)  # never in a log line or traceback
    priv_level: int = 4

    @property
    def label(self) -> str:
        return f"{self.host}:{self.port}"


class SessionKey(NamedTuple):
    """What a reusable session must match. The password and the other parameters of
    the login (privilege level) are in ``digest`` only, as an HMAC under a key of
    this process: the sessions table holds no password."""

    host: str
    port: int
    username: str
    digest: bytes


def session_key(bmc: BmcAddress, salt: bytes) -> SessionKey:
    """The key of the session ``bmc``'s credentials may use (``salt``: per process)."""
    material = json.dumps([bmc.password, bmc.priv_level]).encode()
    return SessionKey(bmc.host, bmc.port, bmc.username,
                      hmac.new(salt, material, hashlib.sha256).digest())


@dataclasses.dataclass
class _Session:
    """One logged-in pyghmi Command and when it logged in (monotonic)."""

    command: Any
    opened: float


class BmcChannel:
    """One BMC: one command at a time, spaced, retried, bounded; its sessions, one
    per set of credentials (``SessionKey``), share that one line and its spacing."""

    def __init__(self, label: str, settings, logins: threading.Semaphore | None = None,
                 salt: bytes | None = None, helpers: HelperThreads | None = None):
        self.label = label
        self.settings = settings
        self._logins = logins or threading.Semaphore(login_concurrency(settings))
        self._salt = salt or os.urandom(32)
        #: The threads the pyghmi exchanges run on (shared by the channels).
        self._helpers = helpers or HelperThreads()
        self._lock = threading.Lock()
        self._last = 0.0                            # monotonic end of the last command
        #: Set when an exchange we gave up waiting for has ended.
        self._inflight: threading.Event | None = None
        self._sessions: dict[SessionKey, _Session] = {}  # logged in, by credentials

    def call(self, bmc: BmcAddress, what: str, netfn: int, command: int,
             data: tuple = (), node: str = "-") -> bytes:
        """Send one raw IPMI request; the response data, or a DriverError."""
        deadline = time.monotonic() + self.settings.ipmi.command_retry_timeout
        attempt = 1
        relogin = True
        while True:
            try:
                return self._attempt(bmc, what, netfn, command, data)
            except _Retryable as exc:
                if isinstance(exc, _SessionLost) and relogin:
                    # Once and at once, whatever the retry budget left: the login with
                    # the node's current credentials says whether they still work.
                    relogin = False
                    LOG.info("Node %s: IPMI session to BMC %s lost (%s); logging in again",
                             node, bmc.label, exc)
                    continue
                if time.monotonic() + self.settings.ipmi.min_command_interval >= deadline:
                    raise errors.DriverError(
                        f"IPMI {what} on BMC {bmc.label} failed after {attempt} attempts "
                        f"in {self.settings.ipmi.command_retry_timeout:g} s: {exc}") from None
                LOG.warning("Node %s: IPMI %s on BMC %s, attempt %d: %s; retrying",
                            node, what, bmc.label, attempt, exc)
                attempt += 1

    def _attempt(self, bmc: BmcAddress, what, netfn, command, data) -> bytes:
        budget = self.settings.ipmi.command_timeout
        if not self._lock.acquire(timeout=budget + self.settings.ipmi.command_retry_timeout):
            raise errors.DriverError(f"BMC {bmc.label} is busy with other commands from "
                                     f"this conductor; IPMI {what} was not sent")
        try:
            self._wait_inflight(bmc, what, budget)
            pause = self._last + self.settings.ipmi.min_command_interval - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            response = self._exchange(bmc, what, netfn, command, data, budget)
        finally:
            self._last = time.monotonic()
            self._lock.release()
        return _check(response, bmc, what)

    def _wait_inflight(self, bmc: BmcAddress, what: str, budget: float) -> None:
        if self._inflight is not None:
            if not self._inflight.wait(budget):
                raise errors.DriverError(
                    f"BMC {bmc.label} has not answered an earlier IPMI command for over "
                    f"{budget:g} s; IPMI {what} was not sent. The BMC is not responding.")
            self._inflight = None

    def _exchange(self, bmc: BmcAddress, what, netfn, command, data, budget) -> dict:
        """Run the pyghmi call on a helper thread: pyghmi can block far longer than
        we allow (a stopped BMC keeps it retrying), and a worker must never hang.

        The live session of exactly these credentials is reused. Otherwise the helper
        logs in first, under the shared login semaphore and within the (shorter)
        login budget: a login costs several round trips and, in pyghmi, wakes on
        every packet of every session, so a cold sweep must not start hundreds of
        them at once. A failed login stores nothing and drops no other session.
        """
        key = session_key(bmc, self._salt)
        cmd, expired = self._reusable(key)
        login_budget = min(budget, self.settings.ipmi.login_timeout)
        if cmd is None and not self._logins.acquire(timeout=login_budget):
            raise _Retryable(f"{login_concurrency(self.settings)} IPMI logins already in "
                             f"progress for {login_budget:g} s ([ipmi] max_concurrent_logins)")
        outcome: dict = {}
        logged_in, done = threading.Event(), threading.Event()
        if cmd is not None:
            logged_in.set()
        started = time.monotonic()
        self._helpers.run(self._run, bmc, key, cmd, expired, (netfn, command, data),
                          outcome, logged_in, done)
        # One wait, not a wait for the login then another: under CPU contention each
        # extra thread wake-up costs milliseconds, per node of a sweep.
        done.wait(login_budget if cmd is None else budget)
        if not done.is_set() and not logged_in.is_set():
            self._inflight = done
            raise errors.DriverError(
                f"IPMI login to BMC {bmc.label} got no answer within {login_budget:g} s "
                f"([ipmi] login_timeout), IPMI {what} abandoned. Check ipmi_address and "
                "ipmi_port, and that the BMC is up and reachable over UDP.")
        if not done.wait(max(0.0, budget - (time.monotonic() - started))):
            self._inflight = done
            raise errors.DriverError(
                f"IPMI {what} to BMC {bmc.label} got no answer within {budget:g} s "
                "([ipmi] command_timeout): the BMC is not responding; check ipmi_address "
                "and ipmi_port, and that the BMC is up and reachable over UDP.")
        if cmd is not None and not _alive(cmd):  # a reused session that broke
            self._sessions.pop(key, None)
            if "error" in outcome or outcome["response"].get("code"):
                raise _SessionLost(_failure_text(outcome))
        if "error" in outcome:
            raise _translate(outcome["error"], bmc, what)
        return outcome["response"]

    def _run(self, bmc: BmcAddress, key: SessionKey, cmd, expired: list, request: tuple,
             outcome: dict, logged_in: threading.Event, done: threading.Event) -> None:
        """The helper thread's part of _exchange: log out expired sessions, log in
        unless ``cmd`` is given, send ``request``; the response or the error in
        ``outcome``, then ``done`` set."""
        netfn, command, data = request
        keep = self.settings.ipmi.session_max_age > 0
        try:
            for old in expired:  # before the login: pyghmi's cache would hand them back
                _logout(old)
            if cmd is None:
                try:
                    cmd = _open(bmc)
                    if keep:
                        self._sessions[key] = _Session(cmd, time.monotonic())
                finally:
                    self._logins.release()
                    logged_in.set()
            outcome["response"] = cmd.raw_command(netfn=netfn, command=command, data=data)
            if not keep:
                _logout(cmd)  # one login per command, as ipmitool
        except Exception as exc:  # noqa: BLE001 - translated by _exchange
            outcome["error"] = exc
        finally:
            done.set()

    def _reusable(self, key: SessionKey) -> tuple[Any, list[Any]]:
        """(the live session of ``key`` young enough to reuse, or None; the sessions
        to log out first: every one past ``[ipmi] session_max_age``, of any key).

        Past that age a session is replaced by a new login, which checks the
        credentials again (a BMC may keep a session after its password changed);
        the sessions of credentials no node uses any more expire the same way.
        """
        oldest = time.monotonic() - self.settings.ipmi.session_max_age
        expired = []
        for other, session in list(self._sessions.items()):
            if session.opened <= oldest or not _alive(session.command):
                del self._sessions[other]
                expired.append(session.command)
        current = self._sessions.get(key)
        return (current.command if current else None), expired

    def close(self) -> threading.Thread | None:
        """Start logging out of the BMC; the thread doing it (None if nothing to do)."""
        commands = [s.command for s in self._sessions.values()]
        self._sessions = {}
        if not commands or self._inflight is not None:
            return None
        thread = threading.Thread(target=_logout_all, args=(commands,), daemon=True)
        thread.start()
        return thread


def login_concurrency(settings) -> int:
    """How many RMCP+ logins one conductor runs at once (at least one)."""
    return max(1, int(settings.ipmi.max_concurrent_logins))


def _alive(cmd) -> bool:
    """A pyghmi Command whose session is logged in and not broken (reusable)."""
    session = getattr(cmd, "ipmi_session", None)
    return bool(session is not None and session.logged and not session.broken)


def _open(bmc: BmcAddress):
    # Quirk: pyghmi looks up its session cache by comparing the user and password
    # it was given with the *encoded* ones it stored, so str credentials never
    # match; a second Command then finds its own half-registered entry and waits
    # forever for a login that already finished. Bytes match, and reuse works.
    # That cache matches user and password but not the privilege level: two of our
    # SessionKeys that differ only in ipmi_priv_level may get one pyghmi session. The
    # credentials are the same, so no node gets a right its credentials do not grant.
    return pyghmi_command.Command(bmc=bmc.host, userid=bmc.username.encode(),
                                  password=bmc.password.encode(), port=bmc.port,
                                  privlevel=bmc.priv_level)


def _logout(cmd) -> None:
    """Log out (one datagram; pyghmi does not wait for the answer). Best effort."""
    try:
        if cmd.ipmi_session.logged:
            cmd.ipmi_session.logout()
    except Exception:  # best effort: the BMC forgets the session by itself
        LOG.debug("IPMI logout failed", exc_info=True)


def _logout_all(commands: list) -> None:
    for cmd in commands:
        _logout(cmd)


def _failure_text(outcome: dict) -> str:
    if "error" in outcome:
        return str(outcome["error"]) or type(outcome["error"]).__name__
    response = outcome["response"]
    return str(response.get("error") or f"completion code 0x{response.get('code', 0):02x}")


def _check(response: dict, bmc: BmcAddress, what: str) -> bytes:
    """Raise for a non-zero completion code; the response data otherwise."""
    code = response.get("code", 0)
    if not code and "error" not in response:
        return bytes(response.get("data", b""))
    detail = response.get("error") or f"completion code 0x{code:02x}"
    if code in RETRYABLE_CODES or detail == "timeout":
        raise _Retryable(f"{RETRYABLE_CODES.get(code, detail)} ({detail})")
    if code in UNSUPPORTED_CODES:
        raise errors.UnsupportedCommand(
            f"BMC {bmc.label} does not support IPMI {what}: {detail} "
            f"(completion code 0x{code:02x}).")
    if code == CODE_INSUFFICIENT_PRIVILEGE:
        raise errors.DriverError(
            f"BMC {bmc.label} refused IPMI {what}: insufficient privilege; check "
            "ipmi_priv_level and the user's rights on the BMC.")
    raise errors.DriverError(f"IPMI {what} on BMC {bmc.label} failed: {detail}.")


def _translate(exc: Exception, bmc: BmcAddress, what: str) -> Exception:
    """A pyghmi exception -> DriverError (or _Retryable for transient ones)."""
    text = str(exc.args[0]) if exc.args and exc.args[0] is not None else ""
    for needle, kind, advice in LOGIN_ERRORS:
        if needle in text:
            if kind == "retry":
                return _Retryable(f"{advice} ({text})")
            return errors.DriverError(
                f"IPMI login to BMC {bmc.label} as user {bmc.username!r} failed: "
                f"{advice} (BMC said: {text}).")
    if isinstance(exc, pyghmi_exc.IpmiException) and (
            not text or "timeout" in text.lower() or "no longer connected" in text):
        return _Retryable(
            f"no answer from {bmc.label} (pyghmi: {text or 'login timed out'}); check "
            "ipmi_address and ipmi_port, and that the BMC is reachable over UDP")
    if isinstance(exc, OSError):
        return errors.DriverError(f"Cannot reach BMC {bmc.label} for IPMI {what}: {exc}; "
                                  "check ipmi_address.")
    return errors.DriverError(f"IPMI {what} on BMC {bmc.label} failed: "
                              f"{type(exc).__name__}: {text or exc!r}")


def install_wakeup_fix() -> None:
    """Bound pyghmi's directed waits to WAKEUP_SLICE seconds (idempotent).

    Quirk: pyghmi's ``Session.awaitresponse`` sends the request, then registers
    with its IO thread to be woken when a packet from the BMC arrives, and only
    then looks at the packets already queued for the session. When the answer
    arrives in between -- a BMC answering in under a millisecond while the
    sending thread waits for the GIL, which is most of the time under load --
    the IO thread has nobody to wake, and the answer sits in the queue until the
    retry timer fires 0.5-1.5 s later. Measured on 1000 virtual BMCs: 2-9 % of
    commands took ~1 s, and a cold sweep took 10-12 s instead of 2.6 s. Waking
    every WAKEUP_SLICE instead makes a lost wake-up cost at most that; the retry
    and give-up deadlines are absolute in awaitresponse, so they do not change.
    """
    wait = pyghmi_session._io_wait
    if getattr(wait, "metalcast_sliced", False):
        return

    def sliced(timeout, myaddr=None, evq=None):
        if myaddr is not None and evq is None:  # awaitresponse's wait for an answer
            timeout = min(timeout, WAKEUP_SLICE)
        return wait(timeout, myaddr, evq)

    sliced.metalcast_sliced = True  # type: ignore[attr-defined]
    pyghmi_session._io_wait = sliced


def install_clock_fix() -> None:
    """Give pyghmi's session code a fine monotonic clock (idempotent).

    Quirk: pyghmi times everything with ``os.times()[4]``, which on Linux counts
    clock ticks (10 ms). Its IO thread sleeps until the nearest waiter's deadline
    and wakes that waiter only once the clock is past it (``deadline - now < 0``):
    with the clock standing still for up to 10 ms, "0 s left" makes it select()
    with no timeout over and over, spinning until the tick. Measured through the
    BMC channels: 27 IO-loop wake-ups and ~86 clock reads per IPMI command with the
    tick clock, 1.6 and ~17 with ``time.monotonic``. The two clocks have different
    origins: BmcChannels installs this when it is built, before any session exists.
    """
    pyghmi_session._monotonic_time = time.monotonic


class BmcChannels:
    """Registry of channels by address:port (one line per BMC; each channel keeps its
    sessions by credentials); kept in the DriverContext."""

    def __init__(self, settings):
        install_wakeup_fix()
        install_clock_fix()
        self.settings = settings
        self._channels: dict[str, BmcChannel] = {}
        self._lock = threading.Lock()
        #: Shared by every channel: RMCP+ logins in flight (see BmcChannel._exchange).
        self._logins = threading.BoundedSemaphore(login_concurrency(settings))
        #: The HMAC key of every SessionKey: random per process, never stored.
        self._salt = os.urandom(32)
        #: The threads every channel's pyghmi exchanges run on.
        self._helpers = HelperThreads()

    def get(self, bmc: BmcAddress) -> BmcChannel:
        with self._lock:
            channel = self._channels.get(bmc.label)
            if channel is None:
                channel = self._channels[bmc.label] = BmcChannel(
                    bmc.label, self.settings, self._logins, self._salt, self._helpers)
            return channel

    def close(self) -> None:
        """Log out of every BMC in parallel, waiting at most LOGOUT_WAIT in all."""
        with self._lock:
            channels, self._channels = list(self._channels.values()), {}
        threads = [t for t in (c.close() for c in channels) if t is not None]
        deadline = time.monotonic() + LOGOUT_WAIT
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
