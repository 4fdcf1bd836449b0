"""Reboot strategies (spec §4.1): ``reboot``, ``lease`` (the appliance's semaphore, as
locksmith's etcd lock but with a TTL), ``off``; and the maintenance window for any.

:meth:`Rebooter.step` is called while an installed update waits for its reboot and
returns what it did; it never blocks longer than the wall warning (or a held lease
acquire, shorter). Rules:

- outside the window nothing happens, and a lease held from before is released: a
  lease acquired outside the window never leads to a reboot outside it, and never
  blocks the group while this host waits (locksmith's deadlock, Flatcar#408);
- with ``lease``, the reboot happens only while the appliance says this host holds
  one (the acquire is held by the appliance up to :data:`LEASE_WAIT` s, answered as
  soon as a slot frees); it is renewed while the wall warning runs and released by
  the engine once the host is healthy again (a holder that disappears loses it at its TTL);
- logged-in users get a wall message and 5 minutes (locksmith's delay); the window and
  the lease are checked again after it;
- the reboot is a command (``REBOOT_COMMAND``, default ``systemctl reboot``).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence

from ramdisk_agent.errors import UpdateEngineError
from ramdisk_agent.host.update.client import LeaseClient
from ramdisk_agent.host.update.window import Window

LOG = logging.getLogger(__name__)
#: Seconds the appliance may hold a lease acquire until a slot frees (it answers at
#: once when one does; leases.py on the conductor's side): a freed slot is taken
#: within milliseconds, not at the next poll.
LEASE_WAIT = 25.0


@dataclasses.dataclass(frozen=True)
class Step:
    """What one step did: ``action`` and, when waiting, seconds until it is worth
    trying again."""

    action: str          #: off | outside-window | lease-busy | rebooting | window-closed
    retry_in: float = 0.0
    detail: str = ""


def logged_in_users() -> list[str]:
    """Users with a session (``who``); none when ``who`` is missing."""
    if shutil.which("who") is None:
        return []
    done = subprocess.run(["who"], capture_output=True, text=True, check=False)
    return [line.split()[0] for line in done.stdout.splitlines() if line.strip()]


def run_command(command: Sequence[str]) -> None:
    """Run the reboot command; UpdateEngineError when it fails."""
    try:
        done = subprocess.run(list(command), capture_output=True, text=True, check=False)
    except OSError as exc:
        raise UpdateEngineError(f"the reboot command {command[0]!r} cannot run: {exc}; "
                                "set REBOOT_COMMAND= in update.conf") from None
    if done.returncode != 0:
        raise UpdateEngineError(f"the reboot command {' '.join(command)} failed "
                                f"(exit {done.returncode}): {done.stderr.strip()[:200]}")


def wall(message: str) -> None:
    if shutil.which("wall") is not None:
        subprocess.run(["wall"], input=message, text=True, capture_output=True, check=False)


class Rebooter:
    def __init__(self, strategy: str, window: Window | None, leases: LeaseClient | None,
                 command: Sequence[str], *, wall_delay: float = 300.0,
                 users: Callable[[], list[str]] = logged_in_users,
                 warn: Callable[[str], None] = wall,
                 now: Callable[[], dt.datetime] = dt.datetime.now,
                 sleep: Callable[[float], None] = time.sleep,
                 run: Callable[[Sequence[str]], None] = run_command, host: str = "",
                 lease_wait: float = LEASE_WAIT):
        if strategy == "lease" and leases is None:
            raise UpdateEngineError("REBOOT_STRATEGY=lease needs the appliance's lease URL "
                                    "and this host's agent token (TOKEN_FILE)")
        self.strategy, self.window, self.leases = strategy, window, leases
        self.command, self.wall_delay = tuple(command), wall_delay
        self.users, self.warn, self.now, self.host = users, warn, now, host
        self.sleep, self.run, self.lease_wait = sleep, run, lease_wait

    def step(self, lease_held: Callable[[bool], None]) -> Step:
        """One attempt; ``lease_held(flag)`` records lease changes in the engine's state."""
        if self.strategy == "off":
            return Step("off", detail="REBOOT_STRATEGY=off: reboot when you choose")
        closed = self._outside_window()
        if closed is not None:
            self.release(lease_held)
            return closed
        if self.strategy == "lease":
            answer = self.leases.acquire(self.lease_wait)  # type: ignore[union-attr]
            if not answer.held:
                return Step("lease-busy", max(answer.retry_after, 5.0),
                            f"{answer.holders} of {answer.max} leases held")
            lease_held(True)
        if self.users():
            self.warn(f"metalcast: this host reboots into a new OS version in "
                      f"{self.wall_delay / 60:g} minutes; save your work.")
            LOG.warning("Host %s: users logged in; rebooting in %.0f s", self.host,
                        self.wall_delay)
            self._wait_renewing(self.wall_delay)
            closed = self._outside_window()
            if closed is not None:
                self.release(lease_held)
                return Step("window-closed", closed.retry_in, closed.detail)
        LOG.warning("Host %s: rebooting into the new version (%s)", self.host,
                    " ".join(self.command))
        self.run(self.command)
        return Step("rebooting")

    def release(self, lease_held: Callable[[bool], None]) -> None:
        if self.leases is None:
            return
        try:
            self.leases.release()
            lease_held(False)
        except UpdateEngineError as exc:
            LOG.warning("Host %s: lease release failed (%s); it expires at its TTL",
                        self.host, exc.message)

    def _outside_window(self) -> Step | None:
        if self.window is None:
            return None
        wait = self.window.seconds_until_open(self.now())
        if wait <= 0:
            return None
        return Step("outside-window", wait, f"the reboot window ({self.window.describe()}) "
                    f"opens in {wait / 60:.0f} min")

    def _wait_renewing(self, seconds: float) -> None:
        """Sleep ``seconds`` in steps of at most a minute, renewing the lease after each."""
        remaining = seconds
        while remaining > 0:
            chunk = min(remaining, 60.0)
            self.sleep(chunk)
            remaining -= chunk
            if self.leases is not None and self.strategy == "lease":
                self.leases.renew()
