"""Runs the appliance: the API over waitress plus the conductor, in one process."""
from __future__ import annotations

import ctypes
import gc
import logging
import signal
import sys
import threading
from types import ModuleType

from api import create_app, create_orchestration_app, create_patching_app
from api.http_server import BoundedServer, ConnectionGuard, ConnectionLimits, create_server
from api.throttle import CheckBudget
from conductor import errors, request_ids
from conductor.appliance import Appliance
from conductor.cmd import command, load_settings
from conductor.config import Settings
from conductor.netboot.services import BIND_HINTS

LOG = logging.getLogger(__name__)
#: Threads of the patching listener: sw-patch sends one request at a time (StarlingX's
#: local API serves one at a time), host-install polls while an upload may run.
PATCHING_THREADS = 2


def _url(host: str, port: int) -> str:
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


def _listen(app, host: str, port: int, threads: int, sockets: dict,
            guard: ConnectionGuard):
    """One listener: every listener is built here, so each gets the same limits. All
    share ``sockets`` (one waitress loop serves them) and ``guard`` (connections per
    client and in total, counted together; api/http_server.py, which also caps each
    route's body before reading it), and each has its own worker threads."""
    return create_server(app, sockets=sockets, guard=guard, host=host, port=port,
                         threads=threads, ident="metalcast", channel_timeout=120)


class Server:
    """API + conductor on one port, and StarlingX's patch API on the patching listener
    (``[patching] listen_host``/``listen_port``, 127.0.0.1:5487; port 0: none);
    ``url`` and ``patching_url`` are known once the sockets are bound."""

    def __init__(self, settings: Settings, threads: int = 8):
        self.appliance = Appliance(settings)
        self._started = False
        service = self.appliance.service
        self._sockets: dict = {}
        # Shared by every listener: the bounds are per client and in total.
        self._guard = ConnectionGuard(ConnectionLimits.from_settings(settings.api))
        self._checks = CheckBudget.from_settings(settings.api)
        self._wsgi = _listen(create_app(service, settings, self._checks), settings.api.host,
                             settings.api.port, threads, self._sockets, self._guard)
        self.url = _url(settings.api.host, self._wsgi.effective_port)
        self._patching_wsgi: BoundedServer | None = None
        self.patching_url: str | None = None
        self._vim_wsgi: BoundedServer | None = None
        self.vim_url: str | None = None
        try:  # these bind now too: a failure stops serve before it reports ready
            self._start_patching_listener(settings, service)
            self._start_vim_listener(settings, service)
            # An API process (--role api) binds no boot server and runs no conductor.
            self._conductor = settings.conductor.role != "api"
            self.boot_lines = self.appliance.start_boot_services(self.url) \
                if self._conductor else []
        except BaseException:
            self._close_sockets()
            raise

    def _start_patching_listener(self, settings: Settings, service) -> None:
        patching = settings.patching
        if not (patching.enabled and patching.listen_port):
            return
        self._patching_wsgi = self._listen_extra(
            create_patching_app(service, settings, self._checks), patching.listen_host,
            patching.listen_port, "the patch API",
            "[patching] listen_port (or METALCAST_PATCHING_LISTEN_PORT)")
        self.patching_url = _url(patching.listen_host, self._patching_wsgi.effective_port)

    def _listen_extra(self, app, host: str, port: int, what: str,
                      option: str) -> BoundedServer:
        """A listener besides the API port's; a port it cannot bind is a ConfigError
        that names ``option`` to change."""
        try:
            return _listen(app, host, port, PATCHING_THREADS, self._sockets, self._guard)
        except OSError as exc:
            hint = BIND_HINTS.get(exc.errno or 0, exc.strerror or str(exc))
            raise errors.ConfigError(reason=(
                f"cannot listen for {what} on {host} port {port}: {hint} "
                f"({exc.strerror}). Set {option} to a free port, or to 0 to serve "
                f"{what} on the API port only.")) from None

    def _start_vim_listener(self, settings: Settings, service) -> None:
        """The orchestration API on StarlingX's VIM port too ([api] vim_port)."""
        if not settings.api.vim_port or service.orchestration is None:
            return
        self._vim_wsgi = self._listen_extra(
            create_orchestration_app(service, settings, self._checks), settings.api.host,
            settings.api.vim_port, "the orchestration API",
            "[api] vim_port (or METALCAST_API_VIM_PORT)")
        self.vim_url = _url(settings.api.host, self._vim_wsgi.effective_port)

    def start(self) -> None:
        """Start the conductor (register, workers, periodic tasks): ``run`` does it
        before it reports ready, so a refused conductor name stops serve first."""
        if not self._started:
            if self._conductor:
                self.appliance.start()
            self._started = True

    def serve_forever(self) -> None:
        self.start()
        try:
            self._wsgi.run()  # the one loop: it serves every listener's sockets
        finally:
            for listener in (self._patching_wsgi, self._vim_wsgi):
                if listener is not None:
                    listener.task_dispatcher.shutdown()
            self.appliance.stop()

    def start_in_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="metalcast-api", daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        """Stop serving from another thread: closing every socket ends the loop."""
        self._close_sockets()

    def _close_sockets(self) -> None:
        for channel in list(self._sockets.values()):
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


def run_conductor(settings: Settings, on_ready=print) -> None:
    """``--role conductor``: registration, workers, periodic tasks and boot servers,
    no REST API (the API processes hand it work through the database), until
    SIGTERM/SIGINT."""
    _limit_malloc_arenas()
    appliance = Appliance(settings)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    try:
        lines = appliance.start_boot_services()
        appliance.start()
    except BaseException:
        appliance.stop()
        raise
    _tune_gc()
    for line in lines:
        on_ready(line)
    on_ready(f"metalcast conductor {settings.conductor.host} running (--role conductor, "
             "no REST API)")
    try:
        stopping.wait()
    except KeyboardInterrupt:
        pass
    finally:
        appliance.stop()
    LOG.info("metalcast conductor stopped")


def run(settings: Settings, on_ready=print) -> None:
    """Serve until SIGTERM/SIGINT; ``on_ready`` gets the API URL."""
    if settings.conductor.role == "conductor":
        return run_conductor(settings, on_ready)
    _limit_malloc_arenas()
    server = Server(settings)
    _tune_gc()
    # waitress leaves its loop cleanly on SystemExit; the conductor then stops.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        server.start()
    except BaseException:
        server.close()
        raise
    for line in server.boot_lines:  # TFTP/HTTP boot URLs, when [pxe] enabled
        on_ready(line)
    if server.patching_url:
        on_ready(f"StarlingX patch API (sw-patch) listening on {server.patching_url}")
    if server.vim_url:
        on_ready(f"StarlingX orchestration API (sw-manager) listening on {server.vim_url}")
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
    # Every line names the API request that caused it (x-openstack-request-id).
    request_ids.install_log_format(logging.getLogger().handlers)
    settings = load_settings(args, **{"api.host": args.host, "api.port": args.port,
                                      "conductor.role": getattr(args, "role", None)})
    run(settings, on_ready=lambda line: print(line, flush=True))
    return 0
