"""CPU of ``metalcast serve`` by thread kind, for bench/deploy_fleet.py (bench only).

bench/deploy_fleet.py puts this directory on the PYTHONPATH of the processes it
starts and names a file in ``BENCH_THREAD_CPU``; only a ``metalcast serve`` acts on
it (and writes the file once at start-up). Every thread then gets its Python name
as its OS name (``/proc/.../comm``, what ``top -H`` and ``perf`` show) and adds its
CPU time to its kind's total when it ends; on SIGUSR1 the process writes
{kind: CPU seconds} of every thread so far (ended ones, and the live ones from
their CPU clocks) to that file. Short-lived threads (an IPMI exchange, a boot
download) are counted too, which sampling /proc from outside would miss. Nothing
of this is in the product.
"""
from __future__ import annotations

import os
import sys

PATH = os.environ.get("BENCH_THREAD_CPU")
# The thread's name -> its kind (the first prefix that matches).
KINDS = (("tftp", "boot servers"), ("boot-http", "boot servers"),
         ("waitress", "API requests"), ("MainThread", "API connections (main loop)"),
         ("metalcast-worker", "conductor workers"),
         ("metalcast-periodic", "conductor periodic"), ("ipmi", "IPMI"),
         ("_IOWorker", "IPMI"))


def _kind(name: str) -> str:
    return next((kind for prefix, kind in KINDS if name.startswith(prefix)), "other")


def _install(path: str) -> None:
    import ctypes
    import json
    import signal
    import threading
    import time

    libc = ctypes.CDLL(None)
    ended: dict[str, float] = {}
    lock = threading.Lock()
    bootstrap = threading.Thread._bootstrap_inner  # type: ignore[attr-defined]

    def _name(thread: threading.Thread) -> str:
        # pyghmi's IO thread has a default name ("Thread-1"): its class says what it is.
        kind = type(thread).__name__
        return kind if kind == "_IOWorker" else thread.name

    def _bootstrap_inner(self) -> None:
        libc.prctl(15, _name(self)[:15].encode(), 0, 0, 0)   # PR_SET_NAME
        try:
            bootstrap(self)
        finally:
            with lock:
                kind = _kind(_name(self))
                ended[kind] = ended.get(kind, 0.0) + time.thread_time()

    def _snapshot(*_) -> None:
        with lock:
            totals = dict(ended)
        # Each live thread's own CPU clock (ns): /proc's per-thread figures are whole
        # ticks (10 ms), which lose ~5 ms per thread.
        for thread in threading.enumerate():
            try:
                cpu = time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
            except (OSError, TypeError):
                continue        # ending now: its CPU lands in ``ended``
            kind = _kind(_name(thread))
            totals[kind] = totals.get(kind, 0.0) + cpu
        tmp = f"{path}.tmp"
        with open(tmp, "w") as out:
            json.dump(totals, out)
        os.replace(tmp, path)

    threading.Thread._bootstrap_inner = _bootstrap_inner  # type: ignore[attr-defined]
    signal.signal(signal.SIGUSR1, _snapshot)
    _snapshot()   # the file exists: the bench may signal (SIGUSR1 would kill otherwise)


if PATH and "serve" in sys.argv[1:2]:
    _install(PATH)
