"""StarlingX's own clients as test peers: ``sw-patch`` (cgcs-patch) and ``sw-manager``
(nfv-client), copied verbatim into ../shared/peers (see each UPSTREAM.txt) and installed
into their own venv by ``scripts/install-peers``. A missing venv FAILS the test (never
skips) with the command to run.

sw-patch logs in to Keystone only on a StarlingX system controller: with
``--os-region-name SystemController`` it reads the openrc variables (OS_AUTH_URL with
``/v3``, OS_USERNAME, ...), takes a token with keystoneauth1's V3Password, finds the
``patching`` endpoint (interface internal, that region) in the catalog and sends every
request to its host and port with ``X-Auth-Token``. Before that it checks that it runs
on the active controller with ``pgrep -f dcorch-api-proxy``: :func:`controller_standin`
starts a process of that name (a sleeping interpreter), the one piece of a StarlingX
controller the client looks for.
"""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PEERS = Path(os.environ.get("METALCAST_PEERS", REPO.parent / "shared" / "peers")).resolve()
PEERS_VENV = Path(os.environ.get("METALCAST_PEERS_VENV", "/opt/metalcast-peers"))
SW_PATCH = PEERS / "starlingx-sw-patch"
#: The only region in which sw-patch takes a token (patch_client.VIRTUAL_REGION).
SYSTEM_CONTROLLER = "SystemController"
TIMEOUT = 120  # s per client run; generous on a shared 2-core machine


def require_peers() -> Path:
    """The peers' venv; a clear failure when scripts/install-peers has not run."""
    if not (PEERS_VENV / "bin" / "sw-manager").is_file() or not SW_PATCH.is_dir():
        pytest.fail(f"the StarlingX peer clients are not installed ({PEERS_VENV}, peers in "
                    f"{PEERS}): run scripts/install-peers (scripts/test runs it as root)")
    return PEERS_VENV


def openrc(auth_url: str, username: str, password: str, **extra: str) -> dict[str, str]:
    """An environment with an ordinary openrc and none of the caller's OS_* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OS_", "PYTHON"))}
    env.update(OS_AUTH_URL=auth_url, OS_USERNAME=username, OS_PASSWORD=password,
               OS_PROJECT_NAME="admin", OS_USER_DOMAIN_NAME="Default",
               OS_PROJECT_DOMAIN_NAME="Default", OS_IDENTITY_API_VERSION="3", **extra)
    return env


def sw_patch(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """The real sw-patch, run from its source folder as UPSTREAM.txt says."""
    env = dict(env, PYTHONPATH=f"{SW_PATCH / 'cgcs-patch'}:{SW_PATCH / 'shims'}")
    return subprocess.run([str(require_peers() / "bin" / "python"),
                           str(SW_PATCH / "bin" / "sw-patch"), *args],
                          env=env, capture_output=True, text=True, timeout=TIMEOUT)


def sw_manager(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(require_peers() / "bin" / "sw-manager"), *args], env=env,
                          capture_output=True, text=True, timeout=TIMEOUT)


def peer_python(env: dict[str, str], code: str) -> subprocess.CompletedProcess:
    """Run ``code`` with the peers' interpreter (their packages importable)."""
    return subprocess.run([str(require_peers() / "bin" / "python"), "-c", code], env=env,
                          capture_output=True, text=True, timeout=TIMEOUT)


@contextlib.contextmanager
def controller_standin() -> Iterator[subprocess.Popen]:
    """A process whose command line holds ``dcorch-api-proxy`` while the block runs."""
    process = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()",
                                "dcorch-api-proxy"], stdin=subprocess.PIPE)
    try:
        yield process
    finally:
        process.kill()
        process.wait(10)


def free_tcp_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a listener that cannot take port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
