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

``--storm`` is a rack powering on at once instead: ``--storm-clients`` (100) curl
processes, each from its own loopback address, fetch a 1 MiB boot file at the same
moment (released together through a pipe once all are waiting), at blksize 1468
and 512, metalcast and in.tftpd interleaved. It prints the aggregate wall time and
MB/s, the ratio metalcast / in.tftpd against its target (>= 1.0x), the slowest
client's time and how many clients failed or timed out (must be 0; every file's
size and SHA-256 are checked), and metalcast's CPU (its worker processes included).
Then it runs ``bench/http_boot.py --storm`` when that bench has the option, so one
command prints both boot storms (``--no-http-storm`` leaves it out).

Usage: .venv/bin/python bench/tftp.py [--size-mib 64] [--runs 3] [--clients 20]
       [--blksizes 512,1468,8192,65464] [--concurrent-blksize 1468]
       .venv/bin/python bench/tftp.py --storm [--storm-clients 100] [--runs 3]
       [--workers N] [--no-http-storm]
"""
from __future__ import annotations

import argparse
import filecmp
import hashlib
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
#: The storm: 1 MiB boot file, both block sizes the issue names, target ratio.
STORM_MIB, STORM_BLKSIZES, STORM_TARGET = 1, (1468, 512), 1.0
STORM_TIMEOUT = 60  # s per storm client (curl --max-time; exit code 28 = timed out)


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


def start_servers(root: Path, work: Path, tftpy: bool = True,
                  workers: int | None = None) -> dict[str, tuple[int, subprocess.Popen]]:
    servers = {}
    port = free_port()
    servers["in.tftpd"] = (port, subprocess.Popen(
        ["in.tftpd", "--listen", "--foreground", "--address", f"127.0.0.1:{port}",
         "--secure", str(root)]))
    if tftpy:
        port = free_port()
        servers["tftpy"] = (port, subprocess.Popen(
            [sys.executable, "-c", STOCK_TFTPY, str(root), str(port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    process, info, _ = start_ready(
        [sys.executable, "-m", "conductor.netboot.tftp", "--root", str(root),
         "--port", "0"] + (["--workers", str(workers)] if workers else []),
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
    """User + system CPU seconds of ``pid`` and its live children (metalcast's TFTP
    worker processes) from /proc: a figure that the machine's load does not inflate
    (unlike wall-clock MB/s on 2 shared cores)."""
    total = 0.0
    for child in [pid] + _children(pid):
        try:
            fields = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:  # exited meanwhile
            continue
        total += sum(int(value) for value in fields[11:13]) / os.sysconf("SC_CLK_TCK")
    return total


def _children(pid: int) -> list[int]:
    pids = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        pids += [int(child) for child in (task / "children").read_text().split()]
    return pids


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


def storm_round(port: int, source: Path, digest: str, work: Path, clients: int,
                blksize: int) -> tuple[float, list[float], int, int]:
    """One storm: (wall s, each client's own time, failed, timed out).

    Every client is a shell that says it is ready, waits for the gate pipe to close,
    then execs curl, so process start-up is not counted and all start together."""
    gate_r, gate_w = os.pipe()
    ready_r, ready_w = os.pipe()
    procs = []
    try:
        for i in range(clients):
            out = work / f"storm{i}.out"
            script = (f"printf x >&{ready_w}; read _; exec curl -s -o {out} "
                      f"-w '%{{time_total}}' --max-time {STORM_TIMEOUT} "
                      f"--tftp-blksize {blksize} --interface 127.0.0.{10 + i} "
                      f"tftp://127.0.0.1:{port}/{source.name}")
            procs.append((out, subprocess.Popen(
                ["sh", "-c", script], stdin=gate_r, stdout=subprocess.PIPE, text=True,
                pass_fds=(ready_w,))))
        os.close(ready_w)
        ready_w = -1
        waiting = 0
        while waiting < clients:
            chunk = os.read(ready_r, clients)
            if not chunk:
                raise RuntimeError("a storm client died before the start")
            waiting += len(chunk)
        started = time.monotonic()
        os.close(gate_w)  # every client's ``read`` sees EOF at once
        gate_w = -1
        results = [(out, proc.communicate(), proc.returncode) for out, proc in procs]
        wall = time.monotonic() - started
    finally:
        for fd in (gate_r, gate_w, ready_r, ready_w):
            if fd >= 0:
                os.close(fd)
    times, failed, timeouts = [], 0, 0
    for out, (stdout, _), code in results:
        times.append(float(stdout or "nan"))
        intact = out.exists() and hashlib.sha256(out.read_bytes()).hexdigest() == digest
        failed += code != 0 or not intact
        timeouts += code == 28
        out.unlink(missing_ok=True)
    return wall, times, failed, timeouts


def storm(servers, source: Path, work: Path, clients: int, runs: int) -> None:
    """The PXE storm table: every blksize, ``runs`` rounds per server, interleaved."""
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    total_mb = clients * source.stat().st_size / 1e6
    names = list(servers)
    print(f"\nPXE storm: {clients} curl clients at once (one loopback address each), "
          f"{source.stat().st_size >> 20} MiB each, {runs} rounds per server, interleaved")
    print(f"{'blksize':>7} {'server':>10} {'wall s best (median)':>21} "
          f"{'MB/s best':>9} {'slowest client s':>16} {'failed':>6} {'timed out':>9} "
          f"{'server CPU s':>12}")
    for blksize in STORM_BLKSIZES:
        walls = {name: [] for name in names}
        worst = {name: 0.0 for name in names}
        bad = {name: [0, 0] for name in names}
        cpu = {name: 0.0 for name in names}
        for _ in range(runs):
            for name in names:
                port, process = servers[name]
                before = cpu_seconds(process.pid)
                wall, times, failed, timeouts = storm_round(port, source, digest, work,
                                                            clients, blksize)
                cpu[name] += cpu_seconds(process.pid) - before
                walls[name].append(wall)
                worst[name] = max(worst[name], max(times))
                bad[name][0] += failed
                bad[name][1] += timeouts
        for name in names:
            best, median = min(walls[name]), statistics.median(walls[name])
            # in.tftpd's forked children are not counted in its /proc figure.
            cpu_cell = f"{cpu[name] / runs:12.2f}" if name == "metalcast" else f"{'-':>12}"
            print(f"{blksize:>7} {name:>10} {best:>11.2f} ({median:>6.2f}) "
                  f"{total_mb / best:>9.1f} {worst[name]:>16.2f} {bad[name][0]:>6} "
                  f"{bad[name][1]:>9} {cpu_cell}")
        ratio = min(walls["in.tftpd"]) / min(walls["metalcast"])
        ratio_median = statistics.median(walls["in.tftpd"]) / statistics.median(
            walls["metalcast"])
        failures = bad["metalcast"][0] + bad["metalcast"][1]
        verdict = "met" if ratio >= STORM_TARGET and not failures else "NOT met"
        print(f"{blksize:>7} ratio metalcast / in.tftpd (aggregate): {ratio:.2f}x best, "
              f"{ratio_median:.2f}x median; target >= {STORM_TARGET:.1f}x with no client "
              f"failing or timing out: {verdict}", flush=True)


def http_storm() -> None:
    """``bench/http_boot.py --storm`` (another bench), when it has that option."""
    bench = Path(__file__).resolve().parent / "http_boot.py"
    if not bench.exists():
        print("\nHTTP boot storm skipped: bench/http_boot.py does not exist")
        return
    usage = subprocess.run([sys.executable, str(bench), "--help"], capture_output=True,
                           text=True, timeout=60).stdout
    if "--storm" not in usage:
        print("\nHTTP boot storm skipped: bench/http_boot.py has no --storm option")
        return
    print("\n== bench/http_boot.py --storm", flush=True)
    code = subprocess.run([sys.executable, str(bench), "--storm"], check=False).returncode
    if code:
        print(f"bench/http_boot.py --storm failed (exit code {code})")


def run_storm(args) -> None:
    with tempfile.TemporaryDirectory(prefix="tftp-storm-") as tmp:
        root, work = Path(tmp, "root"), Path(tmp, "work")
        root.mkdir()
        work.mkdir()
        (root / "probe").write_bytes(b"probe\n")
        source = root / "boot.img"
        source.write_bytes(os.urandom(STORM_MIB << 20))
        servers = start_servers(root, work, tftpy=False, workers=args.workers)
        try:
            storm(servers, source, work, args.storm_clients, args.runs)
        finally:
            for _, process in servers.values():
                stop(process.pid, process)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--blksizes", default="512,1468,8192,65464")
    parser.add_argument("--concurrent-blksize", type=int, default=1468)
    parser.add_argument("--storm", action="store_true",
                        help="a PXE storm (and bench/http_boot.py --storm) instead")
    parser.add_argument("--storm-clients", type=int, default=100)
    parser.add_argument("--workers", type=int, default=None,
                        help="metalcast's TFTP worker processes (default: its own)")
    parser.add_argument("--no-http-storm", action="store_true",
                        help="with --storm: leave out bench/http_boot.py --storm")
    args = parser.parse_args()
    for tool, package in TOOLS.items():
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed (Debian package {package})")
    if not 0 < args.storm_clients <= 240:
        sys.exit("--storm-clients must be 1..240 (one address 127.0.0.10+i each)")
    print(f"load average before: {os.getloadavg()}, {os.cpu_count()} CPUs")
    if args.storm:
        run_storm(args)
        print(f"\nload average after: {os.getloadavg()}")
        if not args.no_http_storm:
            http_storm()
        return 0
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
