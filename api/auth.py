"""API authentication: ``none`` (loopback only) or ``http_basic`` with a bcrypt htpasswd;
with ``http_basic`` an identity token (``X-Auth-Token``, api/identity/) is taken too.

Checking bcrypt costs ~0.1-0.4 s of CPU, so verified credentials are remembered
(by a SHA-256 of user and password) until the htpasswd file changes. Other checks
are bounded (api/throttle.py): a few at once, per client and in total, and a client
that keeps failing waits longer and longer (429 with Retry-After, at once). An
unknown user costs one bcrypt check too, against a dummy hash of the file's cost,
so the time of a refusal does not tell which user names exist. bcrypt reads 72
bytes of a password at most: a longer one is refused (401), never truncated.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import re
import threading
from collections import Counter
from pathlib import Path

import bcrypt
import flask
from werkzeug import exceptions as http

from api import common, updates
from api.throttle import Busy, CheckBudget, client_of
from conductor import errors
from conductor.identity import IdentityToken

LOG = logging.getLogger(__name__)

#: Paths anyone may read: version discovery (as Ironic allows it).
PUBLIC_PATHS = frozenset({"/", "/v1", "/v1/"})
#: Whole paths open to the ramdisk agent (lookup, heartbeat of one node): Ironic's
#: ramdisk policy; the agent token authenticates heartbeats instead.
RAMDISK_PATHS = re.compile(r"/v1/(lookup|heartbeat/[^/]+)/?")
#: bcrypt uses the first 72 bytes of a password (bcrypt 5 refuses longer ones).
MAX_PASSWORD_BYTES = 72
INVALID = "Invalid user name or password."
#: The cost of the dummy hash while the file has no bcrypt entry (Python bcrypt's).
DEFAULT_COST = 12
#: Identity v3 (api/identity/): logging in needs no credentials, and its token routes
#: check the tokens they are given themselves.
IDENTITY_ROOT = "/v3"
#: Every API takes an identity token (POST /v3/auth/tokens) in this header as well as
#: basic credentials; a token that is not valid is refused even if those are there.
TOKEN_HEADER = "X-Auth-Token"
BAD_TOKEN = "The request you have made requires authentication: the token is not valid."
#: app.extensions key of this app's HtpasswdAuth (None with auth_strategy none).
CHECKER = "metalcast.auth"


class HtpasswdAuth:
    """Verifies ``Authorization: Basic`` against an htpasswd file of bcrypt hashes."""

    def __init__(self, path: Path, budget: CheckBudget | None = None):
        self.path = Path(path)
        self.budget = budget or CheckBudget()
        self._lock = threading.Lock()
        self._mtime: int | None = None
        self._users: dict[str, bytes] = {}
        self._verified: set[bytes] = set()
        self._dummy = _dummy_hash(DEFAULT_COST)

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
        costs = Counter(_cost(hashed) for hashed in users.values())
        cost = max(costs, key=lambda c: (costs[c], c)) if costs else DEFAULT_COST
        if _cost(self._dummy) != cost:
            self._dummy = _dummy_hash(cost)

    def check(self, header: str | None) -> str:
        """Return the user name, or raise NotAuthorized."""
        return self.verify(*_parse_basic(header))

    def verify(self, user: str, password: str, client: str | None = None) -> str:
        """Return ``user`` if ``password`` is theirs, or raise NotAuthorized: the one
        password check, for basic auth and the identity login (api/identity/) alike.
        ``client`` (default: the request's address) is what the checks are counted by:
        over its bounds this raises 429 (werkzeug TooManyRequests) without checking."""
        secret = password.encode()
        if len(secret) > MAX_PASSWORD_BYTES:
            raise errors.NotAuthorized(f"{INVALID} A password is at most "
                                       f"{MAX_PASSWORD_BYTES} bytes.")
        digest = hashlib.sha256(f"{user}\0{password}".encode()).digest()
        with self._lock:
            self._load()
            if digest in self._verified:
                return user
            hashed, dummy = self._users.get(user), self._dummy

        def check() -> bool:  # an unknown user costs the same: the dummy hash
            try:
                return bcrypt.checkpw(secret, hashed or dummy) and hashed is not None
            except ValueError:  # a malformed hash in the file: nobody logs in with it
                LOG.warning("htpasswd %s: the bcrypt hash of %r is malformed", self.path,
                            user)
                return False

        try:
            ok = self.budget.run(client or _request_client(), check)
        except Busy as exc:
            raise http.TooManyRequests(str(exc), retry_after=exc.retry_after) from None
        if not ok:
            raise errors.NotAuthorized(INVALID)
        with self._lock:
            self._verified.add(digest)
        return user

    def is_verified(self, header: str | None) -> bool:
        """Whether basic credentials in ``header`` were verified before (no bcrypt:
        cheap enough for waitress's event loop, api/http_server.py)."""
        try:
            user, password = _parse_basic(header)
        except errors.NotAuthorized:
            return False
        digest = hashlib.sha256(f"{user}\0{password}".encode()).digest()
        with self._lock:
            self._load()
            return digest in self._verified

    def credential(self, user: str) -> str | None:
        """A fingerprint of ``user``'s htpasswd entry (None: no such user): a token
        remembers it at login and dies when it changes (conductor/identity.py)."""
        with self._lock:
            self._load()
            hashed = self._users.get(user)
        return None if hashed is None else hashlib.sha256(hashed).hexdigest()

    def names(self) -> list[str]:
        """The user names in the file."""
        with self._lock:
            self._load()
            return list(self._users)


def _cost(hashed: bytes) -> int:
    """The cost of a bcrypt hash ``$2b$12$...``."""
    try:
        return int(hashed.split(b"$")[2])
    except (IndexError, ValueError):
        return DEFAULT_COST


def _dummy_hash(cost: int) -> bytes:
    """A well-formed bcrypt hash of cost ``cost`` that no password matches: a fresh
    salt (cheap) and a digest that is not one (``.`` x 31)."""
    return bcrypt.gensalt(rounds=max(4, min(cost, 31))) + b"." * 31


def _request_client() -> str:
    return client_of(flask.request.remote_addr) if flask.has_request_context() else "local"


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


def password_checker() -> HtpasswdAuth | None:
    """The htpasswd users of this app; None with auth_strategy none (nobody logs in)."""
    checker: HtpasswdAuth | None = flask.current_app.extensions[CHECKER]
    return checker


def find_token(value: str | None) -> IdentityToken | None:
    """The record of a valid identity token (conductor/identity.py), else None."""
    checker = password_checker()
    if checker is None:
        return None
    return common.service().tokens.find(value, checker.credential)


def _is_public(path: str) -> bool:
    """Whole paths only: ``/v1/lookupfoo`` or ``/v1/heartbeat/x/y`` need credentials."""
    return (path in PUBLIC_PATHS or RAMDISK_PATHS.fullmatch(path) is not None
            or updates.is_public(path)
            or path == IDENTITY_ROOT or path.startswith(IDENTITY_ROOT + "/"))


def preverified(app: flask.Flask):
    """For waitress's parser (api/http_server.py): a cheap test of an Authorization
    header, True when no credentials are needed or these were verified before."""
    checker: HtpasswdAuth | None = app.extensions[CHECKER]
    if checker is None:
        return lambda header: True
    return checker.is_verified


def init_app(app: flask.Flask, strategy: str, htpasswd: Path,
             checks: CheckBudget | None = None) -> None:
    """``checks`` bounds the password checks (api/throttle.py; default: its defaults)."""
    checker = HtpasswdAuth(htpasswd, checks) if strategy == "http_basic" else None
    app.extensions[CHECKER] = checker
    if checker is None:
        return

    @app.before_request
    def authenticate():
        if _is_public(flask.request.path):
            return
        token = flask.request.headers.get(TOKEN_HEADER)
        if token is not None:  # an identity token, as keystonemiddleware takes it
            record = find_token(token)
            if record is None:
                raise errors.NotAuthorized(BAD_TOKEN)
            flask.g.user = record.user_name
            return
        flask.g.user = checker.check(flask.request.headers.get("Authorization"))
