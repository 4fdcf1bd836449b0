"""Per-command latency of the ipmi driver against virtlab's virtual BMCs.

Starts ``--bmcs`` virtual BMCs in ONE ``virtlab.bmc`` process, then:

1. times each driver operation ``--runs`` times on one BMC (min command interval
   0, so the figure is the protocol cost: pyghmi session + UDP round trip + the
   BMC's atomic state write), printing median / p90 / max in milliseconds;
2. reads the power state of every BMC at once from ``--bmcs`` threads, to show
   one process serving them all (per-BMC serialisation does not cross BMCs).

Usage: .venv/bin/python bench/ipmi_latency.py [--runs 50] [--bmcs 32]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from conductor.config import IpmiSettings, Settings
from conductor.drivers.base import BootDevice, PowerState
from conductor.drivers.context import DriverContext
from conductor.drivers.ipmi.interfaces import IPMIManagement, IPMIPower
from virtlab.launcher import start_bmcs, stop_bmcs


class _Task:
    """Just enough of a Task for the interfaces: node fields and update()."""

    def __init__(self, port: int):
        self.driver_info = {"ipmi_address": "127.0.0.1", "ipmi_port": port,
                            "ipmi_username": "admin", "ipmi_password": "password"}
        self.node = types.SimpleNamespace(uuid=f"bench-{port}", properties={},
                                          driver_internal_info={})

    def update(self, **values):
        for key, value in values.items():
            setattr(self.node, key, value)


def _ms(samples: list[float]) -> str:
    samples = sorted(s * 1000 for s in samples)
    p90 = samples[int(len(samples) * 0.9) - 1] if len(samples) >= 10 else samples[-1]
    return (f"median {statistics.median(samples):7.2f}  p90 {p90:7.2f}  "
            f"max {samples[-1]:7.2f} ms")


def _time(func, runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        func()
        samples.append(time.perf_counter() - start)
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--bmcs", type=int, default=32)
    args = parser.parse_args()
    ctx = DriverContext.create(Settings(ipmi=IpmiSettings(min_command_interval=0.0)))
    power, management = IPMIPower(ctx), IPMIManagement(ctx)
    with tempfile.TemporaryDirectory() as tmp:
        lab = start_bmcs(Path(tmp), count=args.bmcs)
        try:
            task = _Task(lab.ports[0])
            print(f"virtlab.bmc pid {lab.pid}: {len(lab.ports)} BMCs in one process")
            print(f"first command (login)    {_ms(_time(lambda: power.get_power_state(task), 1))}")
            ops = {
                "power state read": lambda: power.get_power_state(task),
                "boot device set": lambda: management.set_boot_device(task, BootDevice.PXE),
                "boot device read": lambda: management.get_boot_device(task),
                "power on + off (+waits)": lambda: (
                    power.set_power_state(task, PowerState.ON),
                    power.set_power_state(task, PowerState.OFF)),
            }
            for name, func in ops.items():
                print(f"{name:24s} {_ms(_time(func, args.runs))}")
            tasks = [_Task(port) for port in lab.ports]
            for one in tasks:                       # log in everywhere first
                power.get_power_state(one)
            samples, start = [], time.perf_counter()

            def read(one):
                samples.extend(_time(lambda: power.get_power_state(one), 1))

            threads = [threading.Thread(target=read, args=(t,)) for t in tasks]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            total = time.perf_counter() - start
            print(f"{len(tasks)} BMCs read at once: {total * 1000:.1f} ms in all; "
                  f"per command {_ms(samples)}")
        finally:
            ctx.close()
            stop_bmcs(lab)
    return 0


if __name__ == "__main__":
    sys.exit(main())
