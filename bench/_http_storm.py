"""``bench/http_boot.py --storm``: many machines downloading one initrd at the same moment,
from metalcast's HTTP boot server and from a reference server, in the same run.

Each client is bound to its own 127.0.x.y source address, so per-client limits see
separate machines as on a real network (the server runs with its default limits).
By default the clients are the sockets of one Python process (``_http_clients.py``),
started before the clock: 100 curl processes put their own start-up inside the
measured window, 2-8 s of it on this loaded 2-core machine, which swamped the
difference between the servers. ``--client curl`` runs the real peer instead. Read
the ratio to the reference measured in the same run, not the absolute MB/s. Servers
are child processes, stopped by PID; their CPU is read from /proc.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from conductor.netboot.http import BootHttpServer

#: The bar the issue sets for the TFTP storm; the HTTP storm is held to the same one.
TARGET = 1.0
CLIENT_TIMEOUT = 110  # s: curl --max-time; a client slower than this has failed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--storm", action="store_true",
                        help="concurrent downloads vs nginx or python -m http.server")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--storm-mib", type=int, default=64)
    parser.add_argument("--storm-runs", type=int, default=3, help="storms per server")
    parser.add_argument("--storm-budget", type=float, default=45.0,
                        help="s after which no further pair of storms starts (a loaded "
                             "machine stays under two minutes)")
    parser.add_argument("--verify-every", type=int, default=10,
                        help="every Nth client pipes its download through sha256sum")
    parser.add_argument("--reference", choices=("auto", "nginx", "http.server"),
                        default="auto")
    parser.add_argument("--client", choices=("python", "curl"), default="python",
                        help="one Python process of many sockets (started before the "
                             "clock), or one curl process per client")
    parser.add_argument("--serve-metalcast", metavar="ROOT", help=argparse.SUPPRESS)


def serve_metalcast(root: Path) -> int:
    """Child mode: serve ``root`` with the default limits, print the port, wait for TERM."""
    server = BootHttpServer(root, "127.0.0.1", 0)
    server.start()
    signal.signal(signal.SIGTERM, lambda *_: None)
    print(server.port, flush=True)
    try:
        signal.sigwait({signal.SIGTERM, signal.SIGINT})
    finally:
        server.stop()
    return 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_listening(port: int, proc: subprocess.Popen, name: str) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{name} did not listen on port {port}")


class Server:
    """A server child process: its URL, its CPU seconds and threads (children too)."""

    def __init__(self, name: str, argv: list[str], port: int | None, cwd: Path):
        self.name = name
        self.proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        if port is None:  # metalcast prints the port it bound
            port = int(self.proc.stdout.readline())
        wait_listening(port, self.proc, name)
        self.url = f"http://127.0.0.1:{port}"

    def pids(self) -> list[int]:
        children = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                if ppid == self.proc.pid:
                    children.append(int(entry.name))
        return [self.proc.pid, *children]

    def cpu(self) -> float:
        total = 0.0
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return total

    def threads(self) -> int:
        count = 0
        for pid in self.pids():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            count += int(re.search(r"^Threads:\s+(\d+)", status, re.M)[1])
        return count

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)  # nginx: fast shutdown; metalcast: stop()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def start_metalcast(root: Path, script: Path) -> Server:
    return Server("metalcast BootHttpServer", [sys.executable, str(script), "--serve-metalcast",
                                               str(root)], None, root)


def start_nginx(nginx: str, root: Path, work: Path) -> Server:
    port = free_port()
    version = subprocess.run([nginx, "-v"], capture_output=True, text=True).stderr.strip()
    user = "user root;\n" if os.geteuid() == 0 else ""
    temps = "".join(f"{kind}_temp_path {work}/{kind};\n"
                    for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    (work / "nginx.conf").write_text(
        f"{user}worker_processes 1;\ndaemon off;\npid {work}/nginx.pid;\n"
        f"error_log {work}/error.log warn;\nevents {{ worker_connections 4096; }}\n"
        f"http {{\n access_log off;\n sendfile on;\n tcp_nopush on;\n{temps}"
        f" server {{ listen 127.0.0.1:{port} backlog=1024; root {root}; }}\n}}\n")
    return Server(f"{version.split(': ')[-1]} (1 worker, sendfile)",
                  [nginx, "-p", str(work), "-e", str(work / "error.log"),
                   "-c", str(work / "nginx.conf")], port, work)


def start_http_server(root: Path) -> Server:
    port = free_port()
    return Server("python -m http.server", [sys.executable, "-m", "http.server", "--bind",
                                            "127.0.0.1", "--directory", str(root), str(port)],
                  port, root)


def client_argv(url: str, index: int, verify: bool) -> list[str]:
    """One machine's download: its own source address; -w to stderr, body to /dev/null
    or, for a verified client, through sha256sum."""
    source = f"127.0.{1 + index // 250}.{2 + index % 250}"
    curl = ["curl", "--noproxy", "*", "-sS", "-f", "--interface", source,
            "--max-time", str(CLIENT_TIMEOUT),
            "-w", "%{stderr}%{http_code} %{size_download} %{time_total}\\n"]
    if verify:
        return ["bash", "-o", "pipefail", "-c",
                shlex.join([*curl, "-o", "-", url]) + " | sha256sum"]
    return [*curl, "-o", "/dev/null", url]


class PeakThreads(threading.Thread):
    """Samples the server's thread count while the storm runs."""

    def __init__(self, server: Server):
        super().__init__(daemon=True)
        self.server, self.peak, self.done = server, 0, threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.05):
            self.peak = max(self.peak, self.server.threads())


def curl_storm(url: str, args) -> tuple[float, float, list[dict]]:
    """(wall s, s to start the processes, per-client outcome) with curl processes."""
    start = time.perf_counter()
    procs = [subprocess.Popen(client_argv(url, n, n % args.verify_every == 0),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for n in range(args.clients)]
    spawned = time.perf_counter() - start
    outputs = [proc.communicate(timeout=CLIENT_TIMEOUT + 10) for proc in procs]
    wall = time.perf_counter() - start
    outcomes = []
    for proc, (out, err) in zip(procs, outputs):
        last = (err.strip().splitlines() or [""])[-1].split()
        good = proc.returncode == 0 and len(last) == 3
        outcomes.append({"status": int(last[0]) if good else 0,
                         "bytes": int(last[1]) if good else 0,
                         "seconds": float(last[2]) if good else 0.0,
                         "sha256": out.split()[0] if out.strip() else None,
                         "error": f"exit {proc.returncode}: {err.strip()[-200:]!r}"})
    return wall, spawned, outcomes


def python_storm(url: str, args) -> tuple[float, float, list[dict]]:
    """The same with one Python process of many sockets, started before the clock."""
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("_http_clients.py")),
                             url, str(args.clients), str(args.verify_every)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        out, _ = proc.communicate("go\n", timeout=CLIENT_TIMEOUT + 10)
    finally:
        if proc.poll() is None:
            proc.kill()
    result = json.loads(out)
    for outcome in result["clients"]:
        outcome["error"] = f"status {outcome['status']}, {outcome['bytes']} bytes"
    return result["wall"], 0.0, result["clients"]


def storm(server: Server, url: str, args, size: int, digest: str) -> dict:
    cpu = server.cpu()
    sampler = PeakThreads(server)
    sampler.start()
    try:
        wall, spawned, outcomes = (python_storm if args.client == "python" else curl_storm)(
            url, args)
    finally:
        sampler.done.set()
        sampler.join()
    times, failed, verified = [], [], 0
    for n, outcome in enumerate(outcomes):
        ok = outcome["status"] == 200 and outcome["bytes"] == size
        if ok and n % args.verify_every == 0:
            ok = outcome["sha256"] == digest
            verified += ok
        if ok:
            times.append(outcome["seconds"])
        else:
            failed.append(f"client {n}: {outcome['error']}")
    return {"wall": wall, "spawn": spawned, "rate": size * args.clients / wall / 1e6,
            "slowest": max(times, default=float("nan")),
            "median": statistics.median(times) if times else float("nan"),
            "failed": failed, "verified": verified, "cpu": server.cpu() - cpu,
            "threads": sampler.peak}


def make_initrd(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with open(path, "wb") as handle:
        for _ in range(size // (1 << 20)):
            block = os.urandom(1 << 20)
            digest.update(block)
            handle.write(block)
    return digest.hexdigest()


def run(args, script: Path) -> int:
    size = args.storm_mib << 20
    nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    if args.reference == "nginx" and nginx is None:
        sys.exit("nginx is not installed: apt-get install -y nginx-light")
    use_nginx = nginx is not None and args.reference != "http.server"
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    with tempfile.TemporaryDirectory(prefix="bench-httpstorm-", dir=base) as tmp:
        root, work = Path(tmp) / "root", Path(tmp) / "work"
        root.mkdir()
        work.mkdir()
        os.chmod(tmp, 0o755)  # nginx's worker may run as another user
        digest = make_initrd(root / "initrd", size)
        load = os.getloadavg()
        servers = [start_metalcast(root, script)]
        try:
            servers.append(start_nginx(nginx, root, work) if use_nginx  # type: ignore[arg-type]
                           else start_http_server(root))
            rows = []
            started = time.monotonic()
            for run_no in range(args.storm_runs):
                if run_no and time.monotonic() - started > args.storm_budget:
                    print(f"  (time budget of {args.storm_budget:g} s spent: "
                          f"{run_no} storms per server instead of {args.storm_runs})")
                    break
                order = servers if run_no % 2 == 0 else servers[::-1]
                for server in order:
                    rows.append((server, run_no + 1,
                                 storm(server, f"{server.url}/initrd", args, size, digest)))
        finally:
            for server in servers:
                server.stop()
    report(args, servers, rows, load)
    return 1 if any(result["failed"] for _, _, result in rows) else 0


def report(args, servers: list[Server], rows: list, load: tuple) -> None:
    clients = ("curl clients (one process" if args.client == "curl" else
               "clients (sockets of one Python process started before the clock")
    print(f"HTTP boot storm: {args.clients} concurrent {clients} and one "
          f"127.0.x.y source address each), one {args.storm_mib} MiB initrd from /dev/shm, "
          f"up to {args.storm_runs} storms per server alternately; SHA-256 checked for every "
          f"{args.verify_every}th client, size and status for all")
    print(f"  load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, after: "
          + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    print(f"  {'server':<40} {'run':>3} {'wall s':>7} {'MB/s':>7} {'slowest s':>9} "
          f"{'median s':>8} {'spawn s':>7} {'failed':>6} {'sha ok':>6} {'CPU s':>6} {'threads':>7}")
    for server, run_no, r in rows:
        print(f"  {server.name:<40} {run_no:>3} {r['wall']:7.2f} {r['rate']:7.0f} "
              f"{r['slowest']:9.2f} {r['median']:8.2f} {r['spawn']:7.2f} {len(r['failed']):>6} "
              f"{r['verified']:>6} {r['cpu']:6.2f} {r['threads']:>7}")
        for line in r["failed"][:5]:
            print(f"      {line}")
    best = {s.name: max(r["rate"] for srv, _, r in rows if srv is s) for s in servers}
    ours, ref = servers[0].name, servers[1].name
    failed = sum(len(r["failed"]) for _, _, r in rows)
    print(f"  best aggregate: metalcast {best[ours]:.0f} MB/s, {ref} {best[ref]:.0f} MB/s; "
          f"ratio metalcast / reference {best[ours] / best[ref]:.2f} "
          f"(target >= {TARGET:.1f}); failed clients {failed} (target 0)")
