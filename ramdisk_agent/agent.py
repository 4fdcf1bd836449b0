"""The running agent: lookup once, serve the command API, heartbeat with jitter.

:class:`Agent` holds the per-process state (node, token, command results, disks)
and passes itself to the extensions; nothing is global. ``run()`` blocks until
SIGTERM or a power action in ``exit`` mode (virtual lab) and returns the exit code.
"""
from __future__ import annotations

import json
import logging
import random
import socket
import tempfile
import threading
import time
import urllib.parse

from ramdisk_agent import inventory
from ramdisk_agent.api_client import ApiClient, LookupResult
from ramdisk_agent.cmdline import AgentConfig
from ramdisk_agent.commands import CommandRunner
from ramdisk_agent.errors import HeartbeatError
from ramdisk_agent.extensions import all_extensions
from ramdisk_agent.server import HttpsServer, create_app, make_certificate, serve_https

LOG = logging.getLogger(__name__)

DEFAULT_HEARTBEAT_TIMEOUT = 300.0
READY_PREFIX = "METALCAST-AGENT "


class Agent:
    """One agent process for one machine."""

    def __init__(self, config: AgentConfig):
        self.config = config
        self.api = ApiClient(config.api_url or "", config.insecure, config.ca_file)
        self.lookup: LookupResult | None = None
        self.token: str | None = None
        self.runner = CommandRunner(all_extensions(self), on_finished=self.heartbeat_now)
        self.stopping = threading.Event()
        self.exit_code = 0
        self.root_disk: str | None = None      # set by write_image
        self._wake = threading.Event()
        #: Set by a power action that ends this process: no heartbeat from then on.
        self._going_down = False
        self._server: HttpsServer | None = None
        self.callback_url = ""
        self.verify_ca = ""

    @property
    def node(self) -> dict:
        return self.lookup.node if self.lookup else {}

    @property
    def node_uuid(self) -> str | None:
        return self.lookup.uuid if self.lookup else None

    def disks(self) -> list[inventory.Disk]:
        return inventory.list_disks(self.config.disks)

    def macs(self) -> list[str]:
        return self.config.macs or inventory.interface_macs()

    def heartbeat_now(self) -> None:
        """Heartbeat at once (after an async command finished), unless going down."""
        if not self._going_down:
            self._wake.set()

    def stop_after_power_action(self, delay: float) -> None:
        """The machine "powers off" in ``delay`` seconds (``--power-action exit``): the
        process ends then, and sends no heartbeat meanwhile. The conductor that asked
        watches the power state, not the agent, and holds the node while it does: a
        beat now would only be refused (409). A real ramdisk's ``poweroff -f`` ends the
        machine before the command could finish, so it never beats either."""
        self._going_down = True
        threading.Timer(delay, self.stop, args=(0,)).start()

    def stop(self, exit_code: int = 0) -> None:
        self.exit_code = exit_code
        self.stopping.set()
        self._wake.set()

    def run(self) -> int:
        self.api.discover_versions()
        self.lookup = self.api.lookup(self.macs(), self.config.node_uuid,
                                      self.config.lookup_timeout)
        self.token = self.lookup.token
        LOG.info("Lookup: node %s, heartbeat_timeout %s", self.node_uuid,
                 self.lookup.config.get("heartbeat_timeout"))
        with tempfile.TemporaryDirectory(prefix="metalcast-agent-tls-") as tls_dir:
            self._start_server(tls_dir)
            print(READY_PREFIX + json.dumps({"node_uuid": self.node_uuid,
                                             "callback_url": self.callback_url}), flush=True)
            try:
                self._heartbeat_loop()
            finally:
                if self._server is not None:
                    self._server.shutdown()
        LOG.info("Agent for node %s stopped (exit code %s)", self.node_uuid, self.exit_code)
        return self.exit_code

    def _start_server(self, tls_dir: str) -> None:
        host = self.config.advertise_host or self._source_address()
        cert, key, self.verify_ca = make_certificate(host, tls_dir)
        app = create_app(self.runner, lambda: self.token)
        server = self._server = serve_https(app, self.config.listen_host,
                                            self.config.listen_port, cert, key)
        port = server.server_port
        url_host = f"[{host}]" if ":" in host else host
        self.callback_url = f"https://{url_host}:{port}"
        threading.Thread(target=server.serve_forever, name="command-api",
                         daemon=True).start()
        LOG.info("Command API for node %s listening on %s", self.node_uuid, self.callback_url)

    def _source_address(self) -> str:
        """The local address used to reach the API: what the conductor can call back."""
        parts = urllib.parse.urlsplit(self.config.api_url or "")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        family = socket.AF_INET6 if ":" in (parts.hostname or "") else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.connect((parts.hostname, port))
            return sock.getsockname()[0]

    def heartbeat_interval(self) -> float:
        """heartbeat_timeout x U(0.3, 0.6), as IPA, so agents do not synchronise."""
        timeout = (self.config.heartbeat_timeout
                   or float((self.lookup.config if self.lookup else {})
                            .get("heartbeat_timeout") or 0)
                   or DEFAULT_HEARTBEAT_TIMEOUT)
        return timeout * random.uniform(0.3, 0.6)

    def _heartbeat_loop(self) -> None:
        delay: float | None = 0.0       # the first heartbeat goes out at once
        while not self.stopping.is_set():
            self._wake.wait(delay)
            if self.stopping.is_set():
                return
            self._wake.clear()
            # Going down: wait for stop() only.
            delay = None if self._going_down else self._heartbeat_once()

    def _heartbeat_once(self) -> float:
        """Send one heartbeat; the delay before the next one."""
        interval = self.heartbeat_interval()
        assert self.node_uuid is not None and self.token is not None  # set by lookup
        try:
            self.api.heartbeat(self.node_uuid, self.callback_url, self.token, self.verify_ca)
        except HeartbeatError as exc:
            LOG.warning("Heartbeat for node %s refused: %s", self.node_uuid, exc)
            retry = random.uniform(1, 2) if exc.conflict else random.uniform(5, 10)
            return min(retry, interval)
        except OSError as exc:
            LOG.warning("Heartbeat for node %s failed: %s", self.node_uuid, exc)
            return min(random.uniform(5, 10), interval)
        LOG.info("Heartbeat for node %s sent; next in %.2fs", self.node_uuid, interval)
        return interval

    def power_event(self, event: str) -> None:
        """Record ``event`` (power_off/reboot) in the state file for the virtual lab."""
        if not self.config.state_file:
            return
        with open(self.config.state_file, "w", encoding="utf-8") as f:
            json.dump({"event": event, "time": time.time(), "node_uuid": self.node_uuid,
                       "root_disk": self.root_disk}, f)
