"""HTTP boot file throughput: our BootHttpServer vs reading the file locally and vs
``python -m http.server``, measured in the same run with curl over loopback.

    .venv/bin/python bench/http_boot.py [--size-mib 256] [--runs 3] [--parallel 4]

The file is random data (not sparse) and stays in the page cache, so "local" is
``cat FILE >/dev/null`` from cache: the ceiling any server on this machine can
reach. Prints MB/s (best of --runs) and the ratios.

    .venv/bin/python bench/http_boot.py --storm [--clients 100] [--storm-mib 64]
                                                [--client python|curl]

A rack booting at once (issue 14): --clients clients, each from its own loopback
address as each machine has its own, download one --storm-mib initrd from /dev/shm
at the same moment, from metalcast's server (a child process, default limits) and
from nginx (1 worker, sendfile on; ``apt-get install nginx-light``) or, without
nginx, ``python -m http.server``, alternately in the same run. The clients are the
sockets of one Python process by default, curl processes with --client curl (see
``_http_storm.py`` for why). Prints per run the aggregate wall time and MB/s, the
slowest and the median client, failed clients (HTTP status and size checked for
all, SHA-256 for every --verify-every'th), server CPU and peak threads; then the
ratio to the reference. Bounded to well under two minutes with the defaults.
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _http_storm
from conductor.netboot.http import BootHttpServer

CHUNK = 8 * 1024 * 1024


def make_file(path: Path, size: int) -> None:
    with open(path, "wb") as handle:
        left = size
        while left:
            n = min(CHUNK, left)
            handle.write(os.urandom(n))
            left -= n


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def best_rate(cmd: list[str], size: int, runs: int, parallel: int = 1) -> float:
    """MB/s of the best run; with ``parallel`` clients, their aggregate rate."""
    best = 0.0
    for _ in range(runs):
        start = time.perf_counter()
        with ThreadPoolExecutor(parallel) as pool:
            list(pool.map(lambda _: timed(cmd), range(parallel)))
        best = max(best, size * parallel / (time.perf_counter() - start) / 1e6)
    return best


def own_cpu() -> float:
    times = os.times()
    return times.user + times.system


def proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(cmd, size, runs, parallel, cpu) -> tuple[float, float]:
    """(best MB/s, server CPU seconds per GiB served)."""
    before = cpu()
    rate = best_rate(cmd, size, runs, parallel)
    return rate, (cpu() - before) / (size * runs * parallel / 2**30)


def curl_cmd(url: str) -> list[str]:
    return ["curl", "--noproxy", "*", "-sS", "-f", "-o", "/dev/null", url]


def start_reference(root: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1",
                             "--directory", str(root), str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("python -m http.server did not start")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--parallel", type=int, default=4)
    _http_storm.add_arguments(parser)
    args = parser.parse_args()
    if args.serve_metalcast:
        return _http_storm.serve_metalcast(Path(args.serve_metalcast))
    if args.storm:
        return _http_storm.run(args, Path(__file__).resolve())
    size = args.size_mib * 1024 * 1024
    with tempfile.TemporaryDirectory(prefix="bench-httpboot-") as tmp:
        root = Path(tmp)
        path = root / "image.raw"
        make_file(path, size)
        subprocess.run(["cat", str(path)], check=True, stdout=subprocess.DEVNULL)  # warm cache
        ours = BootHttpServer(root, "127.0.0.1", 0)
        ours.start()
        reference, ref_url = start_reference(root)
        try:
            rows = {
                "local cat >/dev/null": (best_rate(["cat", str(path)], size, args.runs), 0),
                "curl file:// (client ceiling)": (best_rate(
                    curl_cmd(path.as_uri()), size, args.runs), 0),
            }
            for label, url, cpu in (("metalcast BootHttpServer", ours.url, own_cpu),
                                    ("python -m http.server", ref_url,
                                     lambda: proc_cpu(reference.pid))):
                for parallel in (1, args.parallel):
                    name = label if parallel == 1 else f"{label}, {parallel} clients"
                    rows[name] = measure(curl_cmd(f"{url}/image.raw"), size, args.runs,
                                         parallel, cpu)
        finally:
            ours.stop()
            reference.terminate()
            reference.wait(10)
    print(f"HTTP boot file download, {args.size_mib} MiB random file from page cache, "
          f"curl over loopback, best of {args.runs}")
    print(f"  {'':<44} {'MB/s':>7} {'server CPU s/GiB':>17}")
    for name, (rate, cpu) in rows.items():
        print(f"  {name:<44} {rate:7.0f} {cpu:17.2f}" if cpu else f"  {name:<44} {rate:7.0f}")
    rate = {name: value[0] for name, value in rows.items()}
    mine, par = rate["metalcast BootHttpServer"], f", {args.parallel} clients"
    print(f"  ratio metalcast / local cat {mine / rate['local cat >/dev/null']:.2f}, "
          f"/ curl file:// {mine / rate['curl file:// (client ceiling)']:.2f}, "
          f"/ http.server {mine / rate['python -m http.server']:.2f}, "
          f"/ http.server{par} "
          f"{rate['metalcast BootHttpServer' + par] / rate['python -m http.server' + par]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
