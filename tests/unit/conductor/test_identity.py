"""Identity tokens (conductor/identity.py): random, stored hashed, good until they expire,
are revoked or their user's password entry changes; over in-memory rows and a fake clock."""
from __future__ import annotations

import dataclasses
import datetime
import hashlib

import pytest

from conductor.db.records import IdentityToken
from conductor.identity import MAX_TOKEN_LENGTH, PURGE_INTERVAL, Tokens, digest

START = datetime.datetime(2026, 1, 1, 12, 0, tzinfo=datetime.UTC)
CREDENTIAL = "c" * 64


class MemoryRows:
    """TokenRows in a dict by hash: what the database would hold."""

    def __init__(self):
        self.rows: dict[str, IdentityToken] = {}
        self.purges = 0

    def insert(self, token: IdentityToken) -> None:
        self.rows[token.token_hash] = dataclasses.replace(token)

    def get(self, token_hash: str) -> IdentityToken | None:
        row = self.rows.get(token_hash)
        return dataclasses.replace(row) if row else None

    def revoke(self, token_hash: str, now: datetime.datetime) -> bool:
        row = self.rows.get(token_hash)
        if row is None or row.revoked_at is not None:
            return False
        row.revoked_at = now
        return True

    def purge_expired(self, now: datetime.datetime) -> int:
        self.purges += 1
        gone = [h for h, row in self.rows.items() if row.expires_at < now]
        for token_hash in gone:
            del self.rows[token_hash]
        return len(gone)


class Clock:
    def __init__(self):
        self.now = START

    def __call__(self) -> datetime.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += datetime.timedelta(seconds=seconds)


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def rows():
    return MemoryRows()


@pytest.fixture
def tokens(rows, clock):
    return Tokens(rows, 3600, clock)


def same(user: str) -> str | None:
    """credential_of: every user still has the entry they logged in with."""
    return CREDENTIAL


def test_a_token_is_256_random_bits_and_only_its_sha256_is_stored(tokens, rows):
    token, record = tokens.issue("alice", CREDENTIAL, "admin", ["password"])
    other, _ = tokens.issue("alice", CREDENTIAL, "admin", ["password"])
    assert token != other and len(token) >= 43          # 32 bytes, URL-safe base64
    assert record.token_hash == hashlib.sha256(token.encode()).hexdigest()
    stored = rows.rows[record.token_hash]
    assert token not in repr(stored)
    assert (stored.user_name, stored.project_name, stored.methods) == \
        ("alice", "admin", ["password"])
    assert stored.expires_at - stored.issued_at == datetime.timedelta(hours=1)


def test_a_valid_token_finds_its_record(tokens):
    token, record = tokens.issue("alice", CREDENTIAL, None, ["password"])
    found = tokens.find(token, same)
    assert found is not None and found.audit_id == record.audit_id
    assert found.user_name == "alice" and found.project_name is None


@pytest.mark.parametrize("forged", ["", "x", "A" * 43, "A" * (MAX_TOKEN_LENGTH + 1)])
def test_forged_tokens_find_nothing(tokens, forged):
    tokens.issue("alice", CREDENTIAL, "admin", ["password"])
    assert tokens.find(forged, same) is None
    assert tokens.find(None, same) is None


def test_one_changed_character_finds_nothing(tokens):
    token, _ = tokens.issue("alice", CREDENTIAL, "admin", ["password"])
    changed = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert tokens.find(changed, same) is None
    assert tokens.find(token.upper() if token.upper() != token else token + "x", same) is None


def test_a_token_expires(tokens, clock):
    token, _ = tokens.issue("alice", CREDENTIAL, "admin", ["password"])
    clock.advance(3599)
    assert tokens.find(token, same) is not None
    clock.advance(1)
    assert tokens.find(token, same) is None


def test_a_revoked_token_finds_nothing_and_revokes_once(tokens):
    token, _ = tokens.issue("alice", CREDENTIAL, "admin", ["password"])
    assert tokens.revoke(token) is True
    assert tokens.find(token, same) is None
    assert tokens.revoke(token) is False
    assert tokens.revoke("not-a-token") is False
    assert tokens.revoke("") is False


def test_a_new_password_or_a_removed_user_ends_the_token(tokens):
    token, _ = tokens.issue("alice", CREDENTIAL, "admin", ["password"])
    assert tokens.find(token, lambda user: "d" * 64) is None
    assert tokens.find(token, lambda user: None) is None
    assert tokens.find(token, same) is not None


def test_the_credential_is_asked_for_the_tokens_own_user(tokens):
    token, _ = tokens.issue("alice", CREDENTIAL, "admin", ["password"])
    asked = []
    tokens.find(token, lambda user: asked.append(user) or CREDENTIAL)
    assert asked == ["alice"]


def test_expired_rows_are_purged_at_most_once_a_minute(tokens, rows, clock):
    old, _ = tokens.issue("alice", CREDENTIAL, "admin", ["password"])
    assert rows.purges == 1
    clock.advance(PURGE_INTERVAL / 2)
    tokens.issue("alice", CREDENTIAL, "admin", ["password"])
    assert rows.purges == 1
    clock.advance(3600 + PURGE_INTERVAL)
    tokens.issue("alice", CREDENTIAL, "admin", ["password"])
    assert rows.purges == 2
    assert digest(old) not in rows.rows and len(rows.rows) == 1
