"""PXE boot of a diskless QEMU (TCG) machine: power-on to the appliance's lookup.

The path (test-lab.md section 2): QEMU's iPXE ROM does DHCP (dnsmasq), fetches
boot.ipxe, the per-node iPXE script over HTTP, then a Debian kernel and a busybox
initramfs over HTTP; the initramfs loads virtio-net, takes a lease and calls
``GET /v1/lookup?addresses=<MAC>``. Every run builds its own network namespace
(virtlab.netlab) and deletes it afterwards; all children are stopped by PID.

Two paths boot the same VM, kernel and initramfs, alternately (``--runs`` times each):

* ``reference``: stock servers (dnsmasq + in.tftpd + python -m http.server, a
  static boot.ipxe over TFTP that loads kernel and initrd), the setup test-lab.md
  measured;
* ``metalcast``: ``metalcast serve`` inside the namespace with its own boot HTTP
  and TFTP servers, managed dnsmasq (which sends iPXE clients boot.ipxe over
  TFTP, with iPXE's no-pxedhcp option) and rendered iPXE scripts; the node is enrolled,
  managed and provided through the API, so automated cleaning renders its script
  and waits in "clean wait", where the lookup answers 200.

Stage times come from the serial console (iPXE prints "URL... ok" when a download
is complete; the initramfs prints marker lines), stamped as each line arrives;
"lookup received" comes from the server's own log. dnsmasq's log is not used for
times: it is written in batches. The table shows each stage's duration next to
test-lab.md section 2's figures (HTTP column, ~13.3 s to the lookup under TCG).

Usage: .venv/bin/python bench/pxe_boot.py [--runs 1] [--only reference|metalcast]
Needs root, qemu-system-x86, ipxe-qemu, dnsmasq-base, tftpd-hpa, busybox-static.
"""
from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.pxe_reference import start_reference
from virtlab.guest import cache_root, debian_kernel
from virtlab.initramfs import build_lookup_initramfs
from virtlab.netlab import NetLab
from virtlab.pxe_appliance import ApplianceLab
from virtlab.pxeboot import boot_timeline, power_on

MAC = "52:54:00:4d:43:01"
#: Server log line of the moment the lookup was handled, per path.
RECEIVED = {"reference": re.compile(r"GET /v1/lookup\?addresses="),
            "metalcast": re.compile(r"agent token issued at lookup|repeat lookup")}

#: test-lab.md section 2, "kernel+initrd over HTTP" column: seconds since QEMU start.
TEST_LAB = {"dhcp_start": 2.3, "dhcp_done": 5.4, "boot_file": 5.45,
            "initrd_fetched": 5.79, "kernel_init": 12.6, "guest_dhcp": 13.2,
            "lookup_received": 13.31, "qemu_exit": 13.4}
#: (stage, from, to): the durations compared; "end to end" is the target (<= 13 s).
STAGES = (("firmware (SeaBIOS + iPXE init)", None, "dhcp_start"),
          ("DHCP (iPXE)", "dhcp_start", "dhcp_done"),
          ("boot.ipxe over TFTP", "dhcp_done", "boot_file"),
          ("HTTP node script + kernel + initrd", "boot_file", "initrd_fetched"),
          ("kernel to /init", "initrd_fetched", "kernel_init"),
          ("NIC modules + lease", "kernel_init", "guest_dhcp"),
          ("lookup request", "guest_dhcp", "lookup_received"),
          ("end to end (power-on to lookup)", None, "lookup_received"),
          ("QEMU exit", None, "qemu_exit"))
TARGET_TOTAL = 13.0


def run_vm(lab: NetLab, server_log, received: re.Pattern, verbose: bool) -> dict[str, float]:
    """Power on the VM in ``lab``; stage times once it has powered itself off."""
    vm = power_on(lab, MAC, echo=(lambda line: print("   |", line)) if verbose else None)
    code = vm.wait()
    stages = boot_timeline(vm)
    stages["qemu_exit"] = time.monotonic() - vm.started  # upper bound: waited after exit
    handled = server_log.wait_for(received.pattern, 5)
    if handled:
        stages["lookup_received"] = handled[0] - vm.started
    if code != 0 or vm.lookup() is None:
        raise RuntimeError(f"the VM did not reach the lookup (exit {code}); console:\n"
                           + vm.console.text())
    print(f"  guest lookup: status {vm.lookup()[0]} for {vm.lookup()[1]}")
    return stages


def reference_run(work: Path, vmlinuz: Path, initrd: Path, verbose: bool) -> dict:
    with NetLab() as lab:
        logs = start_reference(lab, work, vmlinuz, initrd)
        return run_vm(lab, logs["http"], RECEIVED["reference"], verbose)


def metalcast_run(work: Path, vmlinuz: Path, initrd: Path, verbose: bool) -> dict:
    with NetLab() as lab, ApplianceLab(lab, work, vmlinuz, initrd) as appliance:
        appliance.boot_into_cleaning(MAC, "pxe-bench")
        return run_vm(lab, appliance.log, RECEIVED["metalcast"], verbose)


RUNNERS = {"reference": reference_run, "metalcast": metalcast_run}


def durations(stages: dict[str, float]) -> dict[str, float | None]:
    out = {}
    for label, start, end in STAGES:
        if end in stages and (start is None or start in stages):
            out[label] = stages[end] - (stages[start] if start else 0.0)
        else:
            out[label] = None
    return out


def report(results: dict[str, list[dict]]) -> None:
    """Median stage durations per path next to test-lab.md's, with ratios and verdicts."""
    lab = durations(TEST_LAB)
    medians = {path: {label: _median([durations(r)[label] for r in runs])
                      for label, _, _ in STAGES} for path, runs in results.items()}
    print(f"\n{'stage (seconds)':36} {'test-lab':>8}"
          + "".join(f" {path:>10}" for path in medians)
          + ("  metalcast/test-lab  metalcast/reference" if "metalcast" in medians else ""))
    for label, _, _ in STAGES:
        row = f"{label:36} {_fmt(lab[label]):>8}"
        row += "".join(f" {_fmt(values[label]):>10}" for values in medians.values())
        mine = medians.get("metalcast", {}).get(label)
        if mine is not None:
            limit = TARGET_TOTAL if label.startswith("end to end") else lab[label]
            verdict = "OK" if mine <= limit else "SLOWER"
            row += f"  x{mine / lab[label]:5.2f} {verdict:6}"
            ref = medians.get("reference", {}).get(label)
            row += f"       x{mine / ref:5.2f}" if ref else ""
        print(row)
    runs = ", ".join(f"{path}: {len(r)}" for path, r in results.items())
    print(f"medians over the runs ({runs}); target: end to end <= {TARGET_TOTAL:.0f} s and "
          "no stage slower than test-lab.md section 2 (TCG, same kernel)")


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1, help="boots per path (default 1)")
    parser.add_argument("--only", choices=sorted(RUNNERS), help="run one path only")
    parser.add_argument("--verbose", action="store_true", help="echo the serial console")
    args = parser.parse_args()
    kernel = debian_kernel()
    initrd = build_lookup_initramfs(kernel, cache_root() / "pxe" / f"lookup-{kernel.abi}.cpio.gz")
    print(f"kernel {kernel.abi} ({kernel.vmlinuz.stat().st_size / 1e6:.1f} MB), "
          f"initramfs {initrd.stat().st_size / 1e6:.2f} MB")
    print(f"load average before: {_loadavg()} (TCG guests are CPU-bound: a busy machine "
          "stretches every stage, the in-run reference column shows by how much)")
    results: dict[str, list[dict]] = {}
    for run in range(args.runs):  # interleaved, so both paths see the same machine load
        for name in [args.only] if args.only else list(RUNNERS):
            print(f"{name} run {run + 1}/{args.runs}")
            with tempfile.TemporaryDirectory(prefix=f"pxe-bench-{name}-") as work:
                results.setdefault(name, []).append(
                    RUNNERS[name](Path(work), kernel.vmlinuz, initrd, args.verbose))
    report(results)
    print(f"load average after: {_loadavg()}")
    return 0


def _loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


if __name__ == "__main__":
    sys.exit(main())
