"""sushy-tools' Redfish emulator with its fake driver: N systems on one loopback port.

Run it as a child process (tests, benchmarks, the demo)::

    python -m virtlab.redfish --count 2 --state-dir /tmp/rf --power-delay 0 \\
        [--port 0] [--username admin --password secret]

It prints one ready line, ``VIRTLAB-REDFISH-READY {json}`` (url, port, pid and
the systems with their Redfish paths), serves until SIGTERM, and keeps its
state (power, boot override, virtual media) in ``--state-dir``; give it a fresh
directory for a fresh lab. ``start_emulator`` / ``stop_emulator`` are the Python
API: start a child, read its ready line, stop it by PID.

``--power-delay``: the fake driver applies every power change 1-11 s after the
request, at random and on purpose (test-lab.md §5). ``random`` keeps that,
``0`` removes it (the change shows on the next GET), a number fixes it.
``--tls-cert/--tls-key`` serve HTTPS (for redfish_verify_ca tests).
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import random
import signal
import ssl
import subprocess
import sys
import tempfile
import uuid as uuidlib
from pathlib import Path

from virtlab import process as vproc

READY_PREFIX = "VIRTLAB-REDFISH-READY "
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0

#: Addresses that would expose the emulator on every interface.
WILDCARD_ADDRESSES = ("", "::", "0.0.0.0")


@dataclasses.dataclass(frozen=True)
class EmulatedSystem:
    """One fake ComputerSystem of the emulator."""

    uuid: str
    name: str
    path: str   #: Redfish resource path, what driver_info.redfish_system_id takes
    mac: str


@dataclasses.dataclass
class RedfishEmulator:
    """A running ``python -m virtlab.redfish`` child and how to reach it."""

    pid: int
    url: str
    systems: list[EmulatedSystem]
    state_dir: Path
    process: subprocess.Popen | None
    log: list[str]
    username: str | None = None
    password: str | None = None

    def output(self) -> str:
        return "".join(self.log)


# -- the child process ------------------------------------------------------
class _FixedDelay:
    """Stands in for the ``random`` module inside sushy-tools' fake driver.

    ``FakeDriver.set_power_state`` schedules each power change at
    ``int(time.time()) + random.randint(1, 11)`` on purpose: real BMCs are not
    instant. It is the module's only use of ``random``, so answering ``randint``
    with a fixed number makes the delay predictable, and 0 makes the change
    visible on the next GET. Patched here, in our process, never in site-packages.
    """

    def __init__(self, seconds: int):
        self.seconds = seconds

    def randint(self, low: int, high: int) -> int:
        return self.seconds


def _patch_power_delay(seconds: int) -> None:
    from sushy_tools.emulator.resources.systems import fakedriver
    if getattr(fakedriver, "random", None) is not random:
        raise RuntimeError("sushy-tools' fake driver no longer uses the random module "
                           "for its power delay; update virtlab.redfish")
    fakedriver.random = _FixedDelay(seconds)


def fake_systems(count: int) -> list[dict]:
    """``SUSHY_EMULATOR_FAKE_SYSTEMS`` entries: node-0..node-N-1, powered off."""
    systems = []
    for index in range(count):
        mac = "52:54:00:" + ":".join(f"{b:02x}" for b in os.urandom(3))
        systems.append({"uuid": str(uuidlib.uuid4()), "name": f"node-{index}",
                        "power_state": "Off", "external_notifier": False,
                        "nics": [{"mac": mac, "ip": f"192.0.2.{10 + index % 240}"}]})
    return systems


def _write_htpasswd(state_dir: Path, username: str, password: str) -> Path:
    import bcrypt  # the emulator only accepts bcrypt entries
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    path = state_dir / "htpasswd"
    path.write_text(f"{username}:{hashed}\n")
    return path


def _config(args, state_dir: Path) -> dict:
    systems = fake_systems(args.count)
    config = {"SUSHY_EMULATOR_FAKE_DRIVER": True,
              "SUSHY_EMULATOR_STATE_DIR": str(state_dir),
              "SUSHY_EMULATOR_FAKE_SYSTEMS": systems}
    if args.username:
        config["SUSHY_EMULATOR_AUTH_FILE"] = str(
            _write_htpasswd(state_dir, args.username, args.password or ""))
    return config


def serve(args) -> int:
    """Configure sushy-tools' Flask app in this process and serve it."""
    if args.address in WILDCARD_ADDRESSES:
        raise SystemExit(f"refusing to listen on {args.address!r}; use a loopback address")
    state_dir = Path(args.state_dir).resolve()
    (state_dir / "vmedia").mkdir(parents=True, exist_ok=True)
    # Virtual media inserts download the image into a temporary file: keep those
    # inside the state directory, so stopping the lab leaves nothing in /tmp.
    tempfile.tempdir = str(state_dir / "vmedia")
    os.environ.pop("SUSHY_EMULATOR_CONFIG", None)
    from sushy_tools.emulator import main as emulator
    from werkzeug import serving
    config = _config(args, state_dir)
    emulator.app.configure(extra_config=config)
    if args.power_delay != "random":
        _patch_power_delay(int(args.power_delay))
    if args.quiet:
        import logging
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
    tls = None
    if args.tls_cert:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(args.tls_cert, args.tls_key)
    server = serving.make_server(args.address, args.port, emulator.app, threaded=True,
                                 ssl_context=tls)
    host = f"[{args.address}]" if ":" in args.address else args.address
    systems = [{"uuid": s["uuid"], "name": s["name"], "mac": s["nics"][0]["mac"],
                "path": f"/redfish/v1/Systems/{s['uuid']}"} for s in config[
                    "SUSHY_EMULATOR_FAKE_SYSTEMS"]]
    scheme = "https" if tls else "http"
    ready = {"url": f"{scheme}://{host}:{server.server_port}", "pid": os.getpid(),
             "systems": systems, "power_delay": args.power_delay}
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(READY_PREFIX + json.dumps(ready), flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


def parse_args(argv=None):
    parser = argparse.ArgumentParser("python -m virtlab.redfish", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1, help="number of systems")
    parser.add_argument("--address", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: the kernel picks one")
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--power-delay", default="random",
                        help="'random' (the emulator's 1-11 s), 0 (none) or seconds")
    parser.add_argument("--username", help="require HTTP basic auth with this user")
    parser.add_argument("--password")
    parser.add_argument("--quiet", action="store_true", help="no per-request log lines")
    parser.add_argument("--tls-cert", help="serve HTTPS with this certificate (PEM)")
    parser.add_argument("--tls-key", help="the certificate's private key (PEM)")
    args = parser.parse_args(argv)
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key go together")
    if args.power_delay != "random" and not args.power_delay.isdigit():
        parser.error("--power-delay must be 'random' or a whole number of seconds")
    return args


def main(argv=None) -> int:
    return serve(parse_args(argv))


# -- the parent side --------------------------------------------------------
def start_emulator(state_dir: Path, count: int = 1, address: str = "127.0.0.1",
                   port: int = 0, power_delay: int | None = None,
                   username: str | None = None, password: str | None = None,
                   quiet: bool = False, tls: tuple[Path, Path] | None = None,
                   timeout: float = START_TIMEOUT) -> RedfishEmulator:
    """Start the emulator in a child process; ``power_delay`` None keeps its random
    1-11 s delay, 0 removes it, N fixes it at N seconds; ``tls`` is (cert, key)."""
    if importlib.util.find_spec("sushy_tools") is None:
        raise RuntimeError("sushy-tools is not installed; install the test extra: "
                           "pip install -e '.[test]'")
    Path(state_dir).mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "virtlab.redfish", "--count", str(count),
           "--address", address, "--port", str(port), "--state-dir", str(state_dir),
           "--power-delay", "random" if power_delay is None else str(int(power_delay))]
    if username:
        cmd += [f"--username={username}", f"--password={password or ''}"]
    if quiet:
        cmd.append("--quiet")
    if tls:
        cmd += ["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])]
    process, info, log = vproc.start_ready(cmd, READY_PREFIX, timeout, "virtlab.redfish")
    return RedfishEmulator(pid=process.pid, url=info["url"],
                           systems=[EmulatedSystem(**s) for s in info["systems"]],
                           state_dir=Path(state_dir), process=process, log=log,
                           username=username, password=password)


def stop_emulator(pid: int | RedfishEmulator, process: subprocess.Popen | None = None,
                  timeout: float = STOP_TIMEOUT) -> None:
    """Stop the emulator by PID (see virtlab.process.stop)."""
    if isinstance(pid, RedfishEmulator):
        process, pid = pid.process, pid.pid
    vproc.stop(pid, process, timeout)



if __name__ == "__main__":
    sys.exit(main())
