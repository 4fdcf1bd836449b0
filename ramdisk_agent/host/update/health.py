"""Mark-good: the boot is proven only when its health checks pass within the window.

Flatcar runs ``flatcar-setgoodroot`` (``cgpt add -S1 -T0`` + prioritize) 45 s after
update_engine starts; ChromeOS defines "the updater came up" as healthy (spec §1.1,
§1.2). Here the checks are configurable: commands (exit 0) and systemd units
(``systemctl is-active``), plus - by default - that the appliance answered an Omaha
ping. They are retried until all pass or the window (default 45 s) is over; then the
running slot is left unmarked, its try is used up, and the next boot falls back.

Why the appliance check is on by default (``HEALTH_NEEDS_APPLIANCE=true``): an image
that breaks the network is the most common way to lose a host for good - it boots,
its services are "active", and nobody can reach it again. Mender rolls back on the
same condition. A site whose hosts must survive an appliance outage during the window
sets it to false and relies on the local checks.
"""
from __future__ import annotations

import dataclasses
import logging
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence

LOG = logging.getLogger(__name__)
RETRY_SECONDS = 2.0


@dataclasses.dataclass(frozen=True)
class HealthResult:
    ok: bool
    failures: tuple[str, ...] = ()

    @property
    def detail(self) -> str:
        return "; ".join(self.failures) or "all checks passed"


class HealthGate:
    def __init__(self, commands: Sequence[str], units: Sequence[str], window: float, *,
                 appliance: Callable[[], None] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, host: str = ""):
        self.commands, self.units, self.window = tuple(commands), tuple(units), window
        self.appliance, self.clock, self.sleep, self.host = appliance, clock, sleep, host

    def wait(self) -> HealthResult:
        """Check until everything passes or the window is over."""
        deadline = self.clock() + self.window
        while True:
            failures = self.failures(max(deadline - self.clock(), 1.0))
            if not failures:
                LOG.info("Host %s: health checks passed", self.host)
                return HealthResult(True)
            left = deadline - self.clock()
            if left <= 0:
                LOG.error("Host %s: health checks still failing after %.0f s: %s", self.host,
                          self.window, "; ".join(failures))
                return HealthResult(False, tuple(failures))
            self.sleep(min(RETRY_SECONDS, left))

    def failures(self, timeout: float) -> list[str]:
        found = [problem for command in self.commands
                 if (problem := _run(shlex.split(command), timeout, command))]
        if self.units:
            if shutil.which("systemctl") is None:
                found.append("systemctl is not installed but HEALTH_UNITS names units")
            else:
                found += [problem for unit in self.units if (problem := _run(
                    ["systemctl", "is-active", "--quiet", unit], timeout, f"unit {unit}"))]
        if self.appliance is not None:
            try:
                self.appliance()
            except Exception as exc:   # noqa: BLE001 - any failure is "not reached"
                found.append(f"the appliance was not reached: {exc}")
        return found


def _run(argv: list[str], timeout: float, name: str) -> str | None:
    """None when ``argv`` exits 0, else what went wrong."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              check=False)
    except (OSError, ValueError) as exc:
        return f"{name}: cannot run ({exc})"
    except subprocess.TimeoutExpired:
        return f"{name}: no answer within {timeout:.0f} s"
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or [""]
        return f"{name}: exit {done.returncode} {tail[0][:200]}".rstrip()
    return None
