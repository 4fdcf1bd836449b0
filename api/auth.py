"""API authentication: ``none`` (loopback only) or ``http_basic`` with a bcrypt htpasswd.

Checking bcrypt costs ~0.1-0.3 s of CPU, so verified credentials are remembered
(by a SHA-256 of user and password) until the htpasswd file changes.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import threading
from pathlib import Path

import bcrypt
import flask

from conductor import errors

LOG = logging.getLogger(__name__)

#: Paths anyone may read: version discovery (as Ironic allows it).
PUBLIC_PATHS = frozenset({"/", "/v1", "/v1/"})
#: Path prefixes open to the ramdisk agent (lookup, heartbeat): Ironic's ramdisk
#: policy; the agent token authenticates heartbeats instead.
RAMDISK_PREFIXES = ("/v1/lookup", "/v1/heartbeat/")


class HtpasswdAuth:
    """Verifies ``Authorization: Basic`` against an htpasswd file of bcrypt hashes."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._mtime: int | None = None
        self._users: dict[str, bytes] = {}
        self._verified: set[bytes] = set()

    def _load(self) -> None:
        mtime = os.stat(self.path).st_mtime_ns
        if mtime == self._mtime:
            return
        users = {}
        for line in self.path.read_text().splitlines():
            user, sep, hashed = line.strip().partition(":")
            if sep and hashed.startswith(("$2y$", "$2b$", "$2a$")):
                users[user] = hashed.encode()
            elif line.strip() and not line.startswith("#"):
                LOG.warning("htpasswd %s: ignoring a non-bcrypt entry for %r", self.path, user)
        self._users, self._verified, self._mtime = users, set(), mtime

    def check(self, header: str | None) -> str:
        """Return the user name, or raise NotAuthorized."""
        user, password = _parse_basic(header)
        digest = hashlib.sha256(f"{user}\0{password}".encode()).digest()
        with self._lock:
            self._load()
            if digest in self._verified:
                return user
            hashed = self._users.get(user)
        if hashed is None or not bcrypt.checkpw(password.encode(), hashed):
            raise errors.NotAuthorized("Invalid user name or password.")
        with self._lock:
            self._verified.add(digest)
        return user


def _parse_basic(header: str | None) -> tuple[str, str]:
    if not header or not header.lower().startswith("basic "):
        raise errors.NotAuthorized("Authentication required: HTTP basic credentials "
                                   "are missing.")
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise errors.NotAuthorized("Malformed HTTP basic credentials.") from None
    user, sep, password = decoded.partition(":")
    if not sep:
        raise errors.NotAuthorized("Malformed HTTP basic credentials.")
    return user, password


def init_app(app: flask.Flask, strategy: str, htpasswd: Path) -> None:
    if strategy != "http_basic":
        return
    checker = HtpasswdAuth(htpasswd)

    @app.before_request
    def authenticate():
        if flask.request.path in PUBLIC_PATHS or flask.request.path.startswith(
                RAMDISK_PREFIXES):
            return
        flask.g.user = checker.check(flask.request.headers.get("Authorization"))
