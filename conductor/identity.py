"""Identity v3 tokens: issued at login, checked on every request that carries one, revocable.

A token is 32 random bytes (256 bits, URL-safe base64). The database keeps only its
SHA-256 (conductor/db/tokens.py), looked up by that hash and compared once more in
constant time; so every API process on the database accepts a token any of them issued,
and sees a revocation at once. A token is good until it expires ([identity]
token_expiration, one hour as Keystone), is revoked, or its user's htpasswd entry
changes (a new password or a removed user ends it, as Keystone's password change does).
Checking the password is the API's part (api/auth.py holds the users); this module
starts once a user is known.
"""
from __future__ import annotations

import datetime
import hashlib
import hmac
import logging
import secrets
import uuid
from collections.abc import Callable

from conductor.db.queries import utcnow
from conductor.db.records import IdentityToken
from conductor.db.tokens import TokenRows

__all__ = ["IdentityToken", "Tokens", "digest"]

LOG = logging.getLogger(__name__)

#: Random bytes per token: 256 bits.
TOKEN_BYTES = 32
#: Longer X-Auth-Token values are refused unread (ours are 43 characters).
MAX_TOKEN_LENGTH = 512
#: Seconds between two deletions of expired rows by one process.
PURGE_INTERVAL = 60.0


def digest(token: str) -> str:
    """The SHA-256 (hex) under which ``token`` is stored."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


class Tokens:
    """Issues, finds and revokes tokens; one per process, thread-safe (the rows are)."""

    def __init__(self, rows: TokenRows, expiration: float,
                 clock: Callable[[], datetime.datetime] = utcnow):
        self.rows = rows
        self.expiration = datetime.timedelta(seconds=expiration)
        self.clock = clock
        self._purged_at: datetime.datetime | None = None

    def issue(self, user: str, credential: str, project: str | None,
              methods: list[str]) -> tuple[str, IdentityToken]:
        """A new token for ``user`` (scoped to ``project``; None: unscoped) and its record.

        ``credential`` fingerprints the user's password entry at login (see :meth:`find`).
        """
        now = self.clock()
        self._purge(now)
        token = secrets.token_urlsafe(TOKEN_BYTES)
        record = IdentityToken(token_hash=digest(token), audit_id=uuid.uuid4().hex[:22],
                               user_name=user, project_name=project, methods=list(methods),
                               credential=credential, issued_at=now,
                               expires_at=now + self.expiration, revoked_at=None)
        self.rows.insert(record)
        LOG.info("Identity token issued to user %s (project %s, audit id %s, expires %s)",
                 user, project or "-", record.audit_id, record.expires_at.isoformat())
        return token, record

    def find(self, token: str | None,
             credential_of: Callable[[str], str | None]) -> IdentityToken | None:
        """The record of a valid ``token``; None if it is unknown (forged, mistyped,
        purged), expired, revoked, or if ``credential_of(user)`` (the user's password
        entry now) differs from the one at login."""
        if not token or len(token) > MAX_TOKEN_LENGTH:
            return None
        wanted = digest(token)
        record = self.rows.get(wanted)
        if record is None or not hmac.compare_digest(record.token_hash, wanted):
            return None
        reason = self._invalid(record, credential_of)
        if reason:
            LOG.info("Refused identity token of user %s (audit id %s): %s",
                     record.user_name, record.audit_id, reason)
            return None
        return record

    def _invalid(self, record: IdentityToken,
                 credential_of: Callable[[str], str | None]) -> str | None:
        if record.revoked_at is not None:
            return "revoked"
        if record.expires_at <= self.clock():
            return "expired"
        current = credential_of(record.user_name)
        if current is None or not hmac.compare_digest(current, record.credential):
            return "the user's password entry changed or is gone"
        return None

    def revoke(self, token: str) -> bool:
        """Revoke ``token``; False if there was no such unrevoked token."""
        if not token or len(token) > MAX_TOKEN_LENGTH:
            return False
        done = self.rows.revoke(digest(token), self.clock())
        if done:
            LOG.info("Identity token %s... revoked", digest(token)[:8])
        return done

    def _purge(self, now: datetime.datetime) -> None:
        """Delete expired rows, at most every PURGE_INTERVAL seconds per process."""
        if self._purged_at and (now - self._purged_at).total_seconds() < PURGE_INTERVAL:
            return
        self._purged_at = now
        removed = self.rows.purge_expired(now)
        if removed:
            LOG.info("Deleted %d expired identity tokens", removed)
