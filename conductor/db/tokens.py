"""Queries of the identity_tokens table: Identity v3 tokens, stored as their SHA-256.

conductor/identity.py decides what a token is worth; this module only reads and writes
rows. Times come from the caller, so tests control the clock.
"""
from __future__ import annotations

import datetime

import sqlalchemy as sa

from conductor.db.records import IdentityToken
from conductor.db.schema import identity_tokens as table


def _utc(value: datetime.datetime | None) -> datetime.datetime | None:
    # SQLite keeps no time zone: what we wrote was UTC, so read it back as UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=datetime.UTC)
    return value


class TokenRows:
    """The identity_tokens queries over one engine; thread-safe as Store is."""

    def __init__(self, engine: sa.Engine):
        self.engine = engine

    def insert(self, token: IdentityToken) -> None:
        values = {c.name: getattr(token, c.name) for c in table.columns if c.name != "id"}
        with self.engine.begin() as conn:
            conn.execute(table.insert().values(**values))

    def get(self, token_hash: str) -> IdentityToken | None:
        """The row of ``token_hash`` (revoked or expired too), or None."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(table).where(table.c.token_hash == token_hash)
                               ).first()
        if row is None:
            return None
        token = IdentityToken(*row)
        token.issued_at = _utc(token.issued_at) or token.issued_at
        token.expires_at = _utc(token.expires_at) or token.expires_at
        token.revoked_at = _utc(token.revoked_at)
        return token

    def revoke(self, token_hash: str, now: datetime.datetime) -> bool:
        """Mark the token revoked; False if it does not exist or already was."""
        query = table.update().where(table.c.token_hash == token_hash,
                                     table.c.revoked_at.is_(None)).values(revoked_at=now)
        with self.engine.begin() as conn:
            return conn.execute(query).rowcount == 1

    def purge_expired(self, now: datetime.datetime) -> int:
        """Delete the tokens that expired before ``now`` (revoked ones included)."""
        with self.engine.begin() as conn:
            return conn.execute(table.delete().where(table.c.expires_at < now)).rowcount
