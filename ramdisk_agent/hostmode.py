"""``metalcast-agent host --api-url URL ...``: the agent of an installed host.

The host side of in-service patching over the authenticated agent protocol
(conductor/patching/host_channel.py has the conductor side):

1. ``--boot-install`` first runs PatchEngine.boot_install() (§4.6, one-reboot
   guard); when it says reboot, the agent writes ``{"event": "reboot"}`` to
   ``--state-file`` (if given) and exits with status 3 without serving: the init
   script reboots the host.
2. Token: read from ``--token-file`` (default ``<state dir>/host-agent-token.json``,
   0600), which an operator filled with a token issued through the authenticated
   API (``metalcast host token NODE --output FILE``; ramdisk_agent/host/credentials.py).
   The agent never asks for a token: lookup does not answer active nodes. A token
   refused later (revoked, or the node was redeployed) makes the agent read the file
   again, so a newly issued token is picked up without a restart.
3. The HTTPS command API (server.py) with only the ``patching`` extension, its
   certificate kept in ``<state dir>/tls/`` and sent as ``agent_verify_ca``: the
   first heartbeat binds the token to this host and certificate. The conductor
   authenticates its calls with a credential derived from the token
   (ramdisk_agent/wire/agent_tokens.py), never the token itself.
4. Heartbeats every ``--heartbeat-interval`` s (x U(0.8, 1.0), so hosts do not
   synchronise) and at once after a command finished or ``patching.query``:
   ``{..., "agent_mode": "host", "patching": engine.report() + {"install_request"}}``.

Without ``--api-url`` the one-shot actions of ramdisk_agent/host/cli.py run
(``--report``, ``--install``, ``--boot-install``, ``--install-root``).
Exit status: 0 on SIGTERM, 1 when there is no usable token file (or TLS identity),
2 on bad arguments, 3 reboot needed after a boot install, 4 a restart script asked
for the agent to restart.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import random
import signal
import socket
import sys
import threading
import time
import urllib.parse
from pathlib import Path

from ramdisk_agent import __version__
from ramdisk_agent.api_client import ApiClient
from ramdisk_agent.errors import (
    AgentError,
    HeartbeatError,
    HostCredentialsError,
    PatchEngineError,
)
from ramdisk_agent.host import PatchEngine
from ramdisk_agent.host.cli import add_engine_arguments, engine_from_args
from ramdisk_agent.host.credentials import TOKEN_FILE, read_token, tls_identity
from ramdisk_agent.wire.agent_tokens import host_command_token

LOG = logging.getLogger("metalcast-agent.host")
READY_PREFIX = "METALCAST-AGENT "
REBOOT_EXIT, RESTART_EXIT = 3, 4


class HostApiClient(ApiClient):
    """The ramdisk API client plus the host-mode heartbeat."""

    def host_heartbeat(self, node_uuid: str, callback_url: str, token: str,
                       verify_ca: str, report: dict | None) -> None:
        body: dict[str, object] = {"callback_url": callback_url, "agent_token": token,
                "agent_version": __version__, "agent_verify_ca": verify_ca,
                "agent_mode": "host"}
        if report is not None:
            body["patching"] = report
        code, reply = self._call("POST", f"/v1/heartbeat/{node_uuid}",
                                 self.heartbeat_version, body)
        if code != 202:
            raise HeartbeatError(code, str(reply))


class HostAgent:
    """One host's agent: token, command API, heartbeat loop around a PatchEngine."""

    def __init__(self, args: argparse.Namespace, engine: PatchEngine):
        self.args, self.engine = args, engine
        self.api = HostApiClient(args.api_url, args.insecure, args.ca_file)
        self.state_dir = Path(args.state_dir)
        self.token_file = Path(getattr(args, "token_file", None) or
                               self.state_dir / TOKEN_FILE)
        self.node_uuid: str | None = None
        self.token: str | None = None
        self.command_token: str | None = None    # what the conductor presents to us
        self.last_request: str | None = None    # install_request of the last install
        self.callback_url = self.verify_ca = ""
        self.exit_code = 0
        self.stopping, self._wake = threading.Event(), threading.Event()

    # -- token ------------------------------------------------------------------
    def load_token(self) -> None:
        """Read the token file (HostCredentialsError when it is missing or unusable)."""
        issued = read_token(self.token_file)
        wanted = self.args.node_uuid
        if wanted and issued.node_uuid and issued.node_uuid != wanted:
            raise HostCredentialsError(
                f"The token in {self.token_file} was issued for node {issued.node_uuid}, "
                f"not {wanted} (--node-uuid)")
        node_uuid = wanted or issued.node_uuid
        if not node_uuid:
            raise HostCredentialsError(f"{self.token_file} names no node: give --node-uuid")
        self.node_uuid, self.token = node_uuid, issued.token
        self.command_token = host_command_token(issued.token)

    # -- commands ---------------------------------------------------------------
    def install(self, force: bool, locked: bool | None, request_id: str | None) -> dict:
        """patching.install: the engine's answer; the next heartbeat reports it."""
        try:
            result = self.engine.install(force=force, locked=locked)
        finally:
            self.last_request = request_id
        if result.get("restart_agent"):
            LOG.warning("A restart script asked for the agent to restart; exiting with %d",
                        RESTART_EXIT)
            self.exit_code = RESTART_EXIT
        return result

    def heartbeat_now(self) -> None:
        self._wake.set()

    def stop(self, exit_code: int = 0) -> None:
        self.exit_code = exit_code or self.exit_code
        self.stopping.set()
        self._wake.set()

    # -- run --------------------------------------------------------------------
    def run(self) -> int:
        self.load_token()
        self.api.discover_versions()
        from ramdisk_agent.commands import CommandRunner
        from ramdisk_agent.extensions.patching import PatchingExtension
        from ramdisk_agent.server import create_app, serve_https
        runner = CommandRunner([PatchingExtension(self)], on_finished=self.heartbeat_now)
        host = self.args.advertise_host or _source_address(self.args.api_url)
        cert, key, self.verify_ca = tls_identity(self.state_dir, host)
        server = serve_https(create_app(runner, lambda: self.command_token),
                             self.args.listen_host, self.args.listen_port, cert, key)
        url_host = f"[{host}]" if ":" in host else host
        self.callback_url = f"https://{url_host}:{server.server_port}"
        threading.Thread(target=server.serve_forever, name="command-api",
                         daemon=True).start()
        print(READY_PREFIX + json.dumps({"node_uuid": self.node_uuid, "mode": "host",
                                         "callback_url": self.callback_url}), flush=True)
        try:
            self._loop()
        finally:
            server.shutdown()
        return self.exit_code

    def _loop(self) -> None:
        delay = 0.0
        while not self.stopping.is_set():
            self._wake.wait(delay)
            if self.stopping.is_set():
                return
            self._wake.clear()
            delay = self._beat()
            if self.exit_code == RESTART_EXIT:
                self.stop(RESTART_EXIT)

    def _beat(self) -> float:
        """One heartbeat with a fresh report; the delay before the next one."""
        interval = self.args.heartbeat_interval * random.uniform(0.8, 1.0)
        answered = self.last_request       # read first: a set id means the install ended
        try:
            report = dict(self.engine.report(), install_request=answered)
        except PatchEngineError as exc:
            LOG.warning("No patching report this time: %s", exc)
            report = None
        assert self.node_uuid is not None and self.token is not None  # set by load_token
        try:
            self.api.host_heartbeat(self.node_uuid, self.callback_url, self.token,
                                    self.verify_ca, report)
        except HeartbeatError as exc:
            LOG.warning("Heartbeat for node %s refused: %s", self.node_uuid, exc)
            if exc.status == 400 and "token" in str(exc).lower():
                self._reload_token()
            elif exc.status == 400 and "Detected change" in str(exc):
                LOG.error("Node %s: the token is bound to another host or certificate; "
                          "issue a new token (metalcast host token %s --output %s) to "
                          "rebind this agent", self.node_uuid, self.node_uuid,
                          self.token_file)
            return min(random.uniform(1, 2) if exc.conflict else random.uniform(3, 6),
                       interval)
        except OSError as exc:
            LOG.warning("Heartbeat for node %s failed: %s", self.node_uuid, exc)
            return min(random.uniform(3, 6), interval)
        LOG.debug("Heartbeat for node %s sent; next in %.1fs", self.node_uuid, interval)
        return interval

    def _reload_token(self) -> None:
        """The token was refused (revoked, node redeployed): read the file again, so a
        newly issued token is used from the next heartbeat on."""
        old = self.token
        try:
            self.load_token()
        except HostCredentialsError as exc:
            LOG.error("%s", exc.message)
            return
        if self.token == old:
            LOG.error("Node %s: the API refuses the token in %s (revoked, or issued for "
                      "an earlier deployment); issue a new one: metalcast host token %s "
                      "--output %s", self.node_uuid, self.token_file, self.node_uuid,
                      self.token_file)
        else:
            LOG.info("Node %s: new token read from %s", self.node_uuid, self.token_file)


def _source_address(api_url: str) -> str:
    """The local address used to reach the API: what the conductor can call back."""
    parts = urllib.parse.urlsplit(api_url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    family = socket.AF_INET6 if ":" in (parts.hostname or "") else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.connect((parts.hostname, port))
        return sock.getsockname()[0]


def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    p = argparse.ArgumentParser(prog="metalcast-agent host", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--api-url", default=env("METALCAST_HOST_API_URL"), required=False)
    p.add_argument("--node-uuid", default=env("METALCAST_HOST_NODE_UUID"),
                   help="this host's node (default: the one the token file names)")
    p.add_argument("--token-file", default=env("METALCAST_HOST_TOKEN_FILE"),
                   help="the issued token: JSON {token, node_uuid} as `metalcast host "
                        f"token NODE --output FILE` writes it (default STATE_DIR/{TOKEN_FILE})")
    p.add_argument("--listen", default="0.0.0.0:9999", help="HOST:PORT of the command API")
    p.add_argument("--advertise-host", help="host/IP in callback_url (default: the source "
                                            "address towards the API)")
    p.add_argument("--state-dir", default=env("METALCAST_HOST_STATE_DIR",
                                              "/var/lib/metalcast-agent"))
    p.add_argument("--state-file", help="write {\"event\": \"reboot\"} here when a boot "
                                        "install needs a reboot")
    p.add_argument("--heartbeat-interval", type=float, default=30.0)
    p.add_argument("--boot-install", action="store_true",
                   help="install pending patches before serving (at boot)")
    p.add_argument("--insecure", action="store_true", help="do not verify the API's TLS")
    p.add_argument("--ca-file", help="CA bundle for an https API URL")
    p.add_argument("--update-config", default=env("METALCAST_HOST_UPDATE_CONFIG"),
                   help="update.conf of the A/B image update engine: with a SERVER in it, "
                        "its daemon (metalcast-agent update daemon) runs beside the agent")
    p.add_argument("--debug", action="store_true")
    add_engine_arguments(p)
    return p


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.base_url or not args.sw_version:
        parser.error("--base-url and --sw-version are required")
    host, _, port = args.listen.rpartition(":")
    if not port.isdigit():
        parser.error(f"--listen must be HOST:PORT, not {args.listen!r}")
    args.listen_host, args.listen_port = host.strip("[]") or "0.0.0.0", int(port)
    if args.heartbeat_interval <= 0:
        parser.error("--heartbeat-interval must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not any(a == "--api-url" or a.startswith("--api-url=") for a in argv) and \
            not os.environ.get("METALCAST_HOST_API_URL"):
        from ramdisk_agent.host import cli
        return cli.main(argv)
    args = _parse(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        engine = engine_from_args(args)
    except (PatchEngineError, ValueError) as exc:
        build_parser().error(str(exc))
    if args.boot_install and _boot_install(engine, args):
        return REBOOT_EXIT
    agent = HostAgent(args, engine)
    if args.update_config:
        _start_image_updates(args.update_config, agent.stopping)
    signal.signal(signal.SIGTERM, lambda *_: agent.stop(0))
    try:
        return agent.run()
    except AgentError as exc:
        LOG.error("%s", exc.message)
        return 1
    except KeyboardInterrupt:
        return 0


def _start_image_updates(path: str, stopping: threading.Event) -> None:
    """The A/B image update engine's daemon in a thread, stopped with the agent."""
    from ramdisk_agent.host.update import config as update_config
    from ramdisk_agent.host.update import factory
    try:
        conf = update_config.load([path], required=True)
        if not conf.enabled:
            LOG.info("Image updates disabled (no SERVER in %s)", path)
            return
        updates = factory.build(conf)
    except (update_config.ConfigError, AgentError) as exc:
        build_parser().error(f"--update-config {path}: {exc}")
    threading.Thread(target=updates.run, args=(stopping,), name="image-updates",
                     daemon=True).start()


def _boot_install(engine: PatchEngine, args: argparse.Namespace) -> bool:
    """The init-time install; True when the host must reboot now."""
    try:
        result = engine.boot_install()
    except PatchEngineError as exc:
        LOG.error("Boot install failed: %s", exc)
        return False
    LOG.info("Boot install: %s", json.dumps(result, sort_keys=True))
    if not result.get("reboot"):
        return False
    if args.state_file:
        Path(args.state_file).write_text(json.dumps({"event": "reboot", "time": time.time(),
                                                     "boot_install": result}))
    return True
