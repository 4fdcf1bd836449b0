"""Runs the appliance: the API over waitress plus the conductor, in one process."""
from __future__ import annotations

import ctypes
import gc
import logging
import signal
import sys
import threading
from types import ModuleType

from waitress.server import create_server

from api import create_app
from api.starlingx.patching import MAX_UPLOAD
from conductor.appliance import Appliance
from conductor.cmd import command, load_settings
from conductor.config import Settings

LOG = logging.getLogger(__name__)


class Server:
    """API + conductor on one port; ``url`` is known once the socket is bound."""

    def __init__(self, settings: Settings, threads: int = 8):
        self.appliance = Appliance(settings)
        app = create_app(self.appliance.service, settings)
        self._wsgi = create_server(app, host=settings.api.host, port=settings.api.port,
                                   threads=threads, ident="metalcast",
                                   connection_limit=1000, channel_timeout=120,
                                   max_request_body_size=MAX_UPLOAD)
        port = self._wsgi.effective_port
        host = settings.api.host if ":" not in settings.api.host else f"[{settings.api.host}]"
        self.url = f"http://{host}:{port}"
        try:  # boot servers bind now too: a failure stops serve before it reports ready
            self.boot_lines = self.appliance.start_boot_services(self.url)
        except BaseException:
            self._wsgi.close()
            raise

    def serve_forever(self) -> None:
        self.appliance.start()
        try:
            self._wsgi.run()
        finally:
            self.appliance.stop()

    def start_in_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="metalcast-api", daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        """Stop serving from another thread: closing every socket ends the loop."""
        for channel in list(self._wsgi._map.values()):
            channel.close()


#: glibc's mallopt() parameter number for the most malloc arenas (M_ARENA_MAX).
_M_ARENA_MAX = -8


def _limit_malloc_arenas(arenas: int = 2) -> None:
    """Cap glibc's per-thread malloc arenas; call before any thread starts.

    Each busy thread otherwise gets an arena of its own that keeps the peak of the
    large requests it served: after ninety 1000-node detail pages at 5000 nodes the
    server held 159 MiB, 112 MiB with two arenas, at the same latency.
    """
    try:
        ctypes.CDLL("libc.so.6").mallopt(_M_ARENA_MAX, arenas)
    except (OSError, AttributeError):  # not glibc: its allocator has its own policy
        pass


def _tune_gc() -> None:
    """Keep the collector off the long-lived startup objects and off every request.

    A 1000-node detail page creates ~100k containers, which with the default
    thresholds triggered several full collections per request (~10 ms CPU each).
    """
    gc.collect()
    gc.freeze()  # Flask, SQLAlchemy and alembic objects live as long as the process
    gc.set_threshold(10000, 10, 10)


def run(settings: Settings, on_ready=print) -> None:
    """Serve until SIGTERM/SIGINT; ``on_ready`` gets the API URL."""
    _limit_malloc_arenas()
    server = Server(settings)
    _tune_gc()
    # waitress leaves its loop cleanly on SystemExit; the conductor then stops.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    for line in server.boot_lines:  # TFTP/HTTP boot URLs, when [pxe] enabled
        on_ready(line)
    on_ready(f"metalcast API listening on {server.url}")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    LOG.info("metalcast stopped")


@command
def main(args, output: ModuleType) -> int:
    """``metalcast serve``: settings from file, environment and flags, then :func:`run`."""
    if not args.debug:  # the service logs what it does, one line per event
        logging.getLogger().setLevel(logging.INFO)
    settings = load_settings(args, **{"api.host": args.host, "api.port": args.port})
    run(settings, on_ready=lambda line: print(line, flush=True))
    return 0
