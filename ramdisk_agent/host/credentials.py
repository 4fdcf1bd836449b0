"""The host agent's credentials on disk: its issued token and its TLS identity.

* **Token file** (``--token-file``, default ``<state dir>/host-agent-token.json``):
  what ``metalcast host token NODE --output FILE`` writes, the JSON answer of the
  authenticated vendor passthru ``issue_host_agent_token`` (``{"token",
  "node_uuid"}``), or the bare token on one line. An operator puts it on the host;
  the agent never asks the API for a token. It must be readable by its owner only.
* **TLS identity** (``<state dir>/tls/``): a self-signed certificate and its key
  (0600), made on the first start and kept, because the conductor binds the token
  to the certificate of the agent's first heartbeat. A new one is made only when
  the advertised host changes or the old one nears its end; the conductor then
  refuses the agent until an operator issues a new token (the rebinding procedure).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import stat
import time
from pathlib import Path

from ramdisk_agent.errors import HostCredentialsError

LOG = logging.getLogger(__name__)

TOKEN_FILE = "host-agent-token.json"
TLS_DIR = "tls"
CERT_NAME, KEY_NAME, META_NAME = "agent.crt", "agent.key", "agent.json"
#: The host agent's certificate lives long (the token is bound to it) and is renewed
#: this long before its end.
CERT_DAYS, RENEW_DAYS = 3650, 30
DAY = 86400.0
#: An issued token is 43 characters; anything far longer is not one.
MAX_TOKEN_FILE = 4096


@dataclasses.dataclass(frozen=True)
class IssuedToken:
    """The token an operator issued for this host, and its node when the file says."""

    token: str
    node_uuid: str | None = None


def read_token(path: Path) -> IssuedToken:
    """The token in ``path``; HostCredentialsError saying what to do otherwise."""
    how = ("issue one with `metalcast host token NODE --output FILE` (or `baremetal node "
           "passthru call NODE issue_host_agent_token`) and put it there")
    try:
        mode = path.stat().st_mode
        text = path.read_text()[:MAX_TOKEN_FILE + 1]
    except FileNotFoundError:
        raise HostCredentialsError(f"No host agent token file {path}: {how}.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise HostCredentialsError(f"Cannot read the host agent token file {path}: "
                                   f"{exc}") from None
    if mode & 0o077:
        raise HostCredentialsError(
            f"The host agent token file {path} is accessible by other users (mode "
            f"{stat.S_IMODE(mode):04o}); it must be readable by its owner only: "
            f"chmod 600 {path}")
    found = _parse_token(text.strip())
    if found is None:
        raise HostCredentialsError(f"The host agent token file {path} holds no token "
                                   f"(JSON {{\"token\", \"node_uuid\"}} or the token "
                                   f"alone); {how}.")
    return found


def _parse_token(text: str) -> IssuedToken | None:
    if not text or len(text) > MAX_TOKEN_FILE:
        return None
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            return None
        token, node = data.get("token"), data.get("node_uuid")
        if not isinstance(token, str) or not token or \
                (node is not None and not isinstance(node, str)):
            return None
        return IssuedToken(token, node or None)
    return IssuedToken(text) if text.isprintable() and " " not in text else None


def tls_identity(state_dir: Path, host: str, now: float | None = None) -> tuple[str, str, str]:
    """(certificate path, key path, certificate PEM) for ``host``: the kept ones, or
    new ones when there are none, they name another host or they near their end."""
    folder = state_dir / TLS_DIR
    cert, key, meta = folder / CERT_NAME, folder / KEY_NAME, folder / META_NAME
    now = time.time() if now is None else now
    try:
        saved = json.loads(meta.read_text())
        pem = cert.read_text()
        usable = (isinstance(saved, dict) and saved.get("host") == host and key.is_file()
                  and float(saved.get("not_after", 0)) - RENEW_DAYS * DAY > now)
    except (OSError, ValueError, TypeError):
        usable = False
    if usable:
        return str(cert), str(key), pem
    return _new_identity(folder, host, now, replacing=meta.exists())


def _new_identity(folder: Path, host: str, now: float,
                  replacing: bool) -> tuple[str, str, str]:
    from ramdisk_agent import selfsigned  # cryptography: only when a certificate is made
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        cert_pem, key_pem = selfsigned.certificate(host, days=CERT_DAYS)
        key = folder / KEY_NAME
        tmp = key.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(key_pem)
        os.replace(tmp, key)
        (folder / CERT_NAME).write_bytes(cert_pem)
        (folder / META_NAME).write_text(json.dumps(
            {"host": host, "not_after": now + CERT_DAYS * DAY}))
    except OSError as exc:
        raise HostCredentialsError(f"Cannot keep the agent's TLS certificate in "
                                   f"{folder}: {exc}") from None
    if replacing:
        LOG.warning("New TLS certificate for %s in %s (host changed or certificate near "
                    "its end): the conductor refuses this agent until an operator issues "
                    "a new token (metalcast host token NODE)", host, folder)
    else:
        LOG.info("TLS certificate for %s made and kept in %s", host, folder)
    return str(folder / CERT_NAME), str(key), cert_pem.decode("ascii")
