"""TFTP throughput: metalcast's server vs in.tftpd (tftpd-hpa) vs stock tftpy.

All three serve the same temp root on 127.0.0.1, each in its own process (stopped
by PID). For every block size, each server is fetched ``--runs`` times with
``curl --tftp-blksize N`` (runs interleaved between servers so load drift hits all
of them alike); every download is compared byte for byte with the source. Then
``--clients`` curl processes fetch the file at once from each server (total wall
time, failures, timeouts). The ratio printed is metalcast / in.tftpd. The wall-clock
figures move with the machine's load (2 shared cores), so the bench also prints
the CPU time per transfer of the two Python servers, read from /proc, which load
does not inflate.

Usage: .venv/bin/python bench/tftp.py [--size-mib 64] [--runs 3] [--clients 20]
       [--blksizes 512,1468,8192,65464] [--concurrent-blksize 1468]
"""
from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from virtlab.process import start_ready, stop

TOOLS = {"curl": "curl", "in.tftpd": "tftpd-hpa"}
STOCK_TFTPY = ("import sys, tftpy; print('READY', flush=True); "
               "tftpy.TftpServer(sys.argv[1]).listen('127.0.0.1', int(sys.argv[2]))")
CURL_TIMEOUT = 600


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def curl(port: int, name: str, out: Path, blksize: int,
         source: str = "127.0.0.1") -> subprocess.Popen:
    return subprocess.Popen(
        ["curl", "-s", "--max-time", str(CURL_TIMEOUT), "--tftp-blksize", str(blksize),
         "--interface", source, "-o", str(out), f"tftp://127.0.0.1:{port}/{name}"])


def wait_serving(port: int, root: Path, work: Path, what: str) -> None:
    """Poll with a real fetch of the probe file until the server answers."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        out = work / "probe.out"
        if curl(port, "probe", out, 512).wait() == 0 and filecmp.cmp(
                out, root / "probe", shallow=False):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not serve on port {port}")


def start_servers(root: Path, work: Path) -> dict[str, tuple[int, subprocess.Popen]]:
    servers = {}
    port = free_port()
    servers["in.tftpd"] = (port, subprocess.Popen(
        ["in.tftpd", "--listen", "--foreground", "--address", f"127.0.0.1:{port}",
         "--secure", str(root)]))
    port = free_port()
    servers["tftpy"] = (port, subprocess.Popen(
        [sys.executable, "-c", STOCK_TFTPY, str(root), str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    process, info, _ = start_ready(
        [sys.executable, "-m", "conductor.netboot.tftp", "--root", str(root),
         "--port", "0"],
        "TFTP_READY ", 20, "metalcast TFTP")
    servers["metalcast"] = (info["port"], process)
    for what, (port, _) in servers.items():
        wait_serving(port, root, work, what)
    return servers


def fetch(port: int, source: Path, out: Path, blksize: int) -> float:
    """Seconds for one verified download."""
    started = time.monotonic()
    code = curl(port, source.name, out, blksize).wait()
    elapsed = time.monotonic() - started
    if code != 0 or not filecmp.cmp(out, source, shallow=False):
        raise RuntimeError(f"transfer from port {port} at blksize {blksize} failed "
                           f"(curl exit {code})")
    out.unlink()
    return elapsed


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` from /proc: a figure that the machine's
    load does not inflate (unlike wall-clock MB/s on 2 shared cores)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(value) for value in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def throughput(servers, source: Path, work: Path, blksizes, runs: int) -> dict:
    """Print wall-clock MB/s; return server CPU ms per transfer by blksize."""
    mib = source.stat().st_size / 1e6
    names = list(servers)
    cpu: dict[int, dict[str, float]] = {}
    print(f"\n{source.stat().st_size >> 20} MiB over loopback, curl, best (median) MB/s, "
          f"{runs} runs each")
    print(f"{'blksize':>8} " + " ".join(f"{n:>18}" for n in names) + f" {'ratio':>12}")
    for blksize in blksizes:
        times = {name: [] for name in names}
        before = {name: cpu_seconds(servers[name][1].pid) for name in names}
        for _ in range(runs):
            for name in names:
                times[name].append(fetch(servers[name][0], source, work / "out", blksize))
        cpu[blksize] = {n: (cpu_seconds(servers[n][1].pid) - before[n]) * 1000 / runs
                        for n in names}
        best = {n: mib / min(t) for n, t in times.items()}
        median = {n: mib / statistics.median(t) for n, t in times.items()}
        cells = " ".join(f"{best[n]:>9.1f} ({median[n]:>6.1f})" for n in names)
        ratio = best["metalcast"] / best["in.tftpd"]
        ratio_median = median["metalcast"] / median["in.tftpd"]
        print(f"{blksize:>8} {cells} {ratio:>5.2f}x ({ratio_median:.2f}x)", flush=True)
    return cpu


def print_cpu(cpu: dict) -> None:
    """in.tftpd is left out: it ignores SIGCHLD, so its children's CPU is not
    added to its own and /proc has nothing to read once a child exits."""
    print("\nserver CPU per transfer (user+sys ms, mean; lower is better; "
          "ratio = tftpy / metalcast)")
    print(f"{'blksize':>8} {'tftpy':>10} {'metalcast':>10} {'ratio':>7}")
    for blksize, row in cpu.items():
        ratio = row["tftpy"] / row["metalcast"] if row["metalcast"] else float("nan")
        tftpy, ours = row["tftpy"], row["metalcast"]
        print(f"{blksize:>8} {tftpy:>10.0f} {ours:>10.0f} {ratio:>6.1f}x")


def concurrent(servers, source: Path, work: Path, clients: int, blksize: int) -> None:
    print(f"\n{clients} concurrent curl clients, blksize {blksize}, "
          f"{source.stat().st_size >> 20} MiB each")
    for name, (port, _) in servers.items():
        outs = [work / f"c{i}.out" for i in range(clients)]
        started = time.monotonic()
        # One loopback address per client, as machines have: metalcast lets one
        # address hold only a few transfers ([pxe] tftp_sessions_per_client).
        procs = [curl(port, source.name, out, blksize, f"127.0.0.{10 + i}")
                 for i, out in enumerate(outs)]
        codes = [proc.wait() for proc in procs]
        elapsed = time.monotonic() - started
        bad = sum(1 for code, out in zip(codes, outs)
                  if code != 0 or not filecmp.cmp(out, source, shallow=False))
        timeouts = codes.count(28)
        total = clients * source.stat().st_size / 1e6
        print(f"{name:>10}: {elapsed:6.2f} s total, {total / elapsed:7.1f} MB/s aggregate, "
              f"{bad} failed, {timeouts} timed out", flush=True)
        for out in outs:
            out.unlink(missing_ok=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--blksizes", default="512,1468,8192,65464")
    parser.add_argument("--concurrent-blksize", type=int, default=1468)
    args = parser.parse_args()
    for tool, package in TOOLS.items():
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed (Debian package {package})")
    print(f"load average before: {os.getloadavg()}, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(prefix="tftp-bench-") as tmp:
        root, work = Path(tmp, "root"), Path(tmp, "work")
        root.mkdir()
        work.mkdir()
        (root / "probe").write_bytes(b"probe\n")
        source = root / "image.bin"
        source.write_bytes(os.urandom(args.size_mib << 20))
        servers = start_servers(root, work)
        try:
            cpu = throughput(servers, source, work,
                             [int(b) for b in args.blksizes.split(",")], args.runs)
            print_cpu(cpu)
            concurrent(servers, source, work, args.clients, args.concurrent_blksize)
        finally:
            for _, process in servers.values():
                stop(process.pid, process)
    print(f"\nload average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
