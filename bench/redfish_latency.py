"""Per-operation latency of the redfish driver against sushy-tools' emulator.

Starts ``virtlab.redfish`` (fake driver, power delay removed, request log off)
in a temporary state dir, then times each driver operation ``--runs`` times on
one system and prints median / p90 / max in milliseconds, plus how many HTTP
requests one operation costs (counted by a loopback recording proxy on a
separate pass, so the counting does not slow the timed runs).

Operations: a fresh session (new DriverContext: service root + session attempt
+ system read), power state read, boot device set (once) and read, boot mode
read, a full power on+off cycle with the wait, virtual media insert + eject (the
emulator downloads the ISO from a loopback file server), and a raw ``GET`` of
the system with ``requests`` as the floor.

Usage: .venv/bin/python bench/redfish_latency.py [--runs 50] [--system-id]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from conductor.config import Settings
from conductor.drivers.base import BootDevice, PowerState
from conductor.drivers.context import DriverContext
from conductor.drivers.redfish import RedfishManagement, RedfishPower
from tests.functional.redfish_peers import FileServer, RecordingProxy
from virtlab.redfish import start_emulator, stop_emulator


def _task(url: str, system: str | None):
    info = {"redfish_address": url}
    if system:
        info["redfish_system_id"] = system
    return types.SimpleNamespace(node=types.SimpleNamespace(uuid="bench"), driver_info=info)


def operations(url: str, system: str | None, iso_url: str) -> dict:
    """name -> callable(context) doing one operation."""
    def fresh(_ctx):
        ctx = DriverContext.create(Settings())
        RedfishPower(ctx).get_power_state(_task(url, system))
        ctx.close()

    def cycle(ctx):
        power = RedfishPower(ctx)
        power.set_power_state(_task(url, system), PowerState.ON)
        power.set_power_state(_task(url, system), PowerState.OFF)

    def vmedia(ctx):
        management = RedfishManagement(ctx)
        management.insert_virtual_media(_task(url, system), iso_url)
        management.eject_virtual_media(_task(url, system))

    return {
        "new session + power read": fresh,
        "power state read": lambda ctx: RedfishPower(ctx).get_power_state(_task(url, system)),
        "set boot device pxe": lambda ctx: RedfishManagement(ctx).set_boot_device(
            _task(url, system), BootDevice.PXE),
        "get boot device": lambda ctx: RedfishManagement(ctx).get_boot_device(
            _task(url, system)),
        "get boot mode": lambda ctx: RedfishManagement(ctx).get_boot_mode(_task(url, system)),
        "power on+off (waited)": cycle,
        "vmedia insert+eject": vmedia,
    }


def _time(func, ctx, runs: int) -> list[float]:
    func(ctx)  # warm-up: the session is created here
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        func(ctx)
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--no-system-id", action="store_true",
                        help="omit redfish_system_id (adds the Systems collection GET)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        emulator = start_emulator(Path(tmp) / "state", count=1, power_delay=0, quiet=True)
        files = FileServer({"/bench.iso": b"CD001" + bytes(64 * 1024)})
        try:
            system = None if args.no_system_id else emulator.systems[0].path
            iso = files.url + "/bench.iso"
            ops = operations(emulator.url, system, iso)
            print(f"{'operation':28} {'median':>8} {'p90':>8} {'max':>8}  HTTP requests")
            raw = _time(lambda _c: requests.get(emulator.url + emulator.systems[0].path,
                                                timeout=10), None, args.runs)
            _print("raw GET system (requests)", raw, 1)
            for name, func in ops.items():
                ctx = DriverContext.create(Settings())
                samples = _time(func, ctx, args.runs)
                ctx.close()
                _print(name, samples, _count(name, emulator.url, system, iso))
        finally:
            files.stop()
            stop_emulator(emulator)
    return 0


def _count(name: str, url: str, system: str | None, iso_url: str) -> int:
    """HTTP requests one warmed-up ``name`` sends (through a recording proxy)."""
    with RecordingProxy(url) as proxy:
        func = operations(proxy.url, system, iso_url)[name]
        ctx = DriverContext.create(Settings())
        func(ctx)
        before = len(proxy.requests)
        func(ctx)
        ctx.close()
        return len(proxy.requests) - before


def _print(name: str, samples: list[float], requests_per_op: int) -> None:
    samples = sorted(samples)
    p90 = samples[int(len(samples) * 0.9) - 1] if len(samples) >= 10 else samples[-1]
    print(f"{name:28} {statistics.median(samples):8.1f} {p90:8.1f} {samples[-1]:8.1f}"
          f"  {requests_per_op}")


if __name__ == "__main__":
    sys.exit(main())
