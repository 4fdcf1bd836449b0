"""Identity tokens in identity_tokens, on each backend: a token issued by one API process
is accepted and revoked by another on its own engine; expired rows are purged."""
from __future__ import annotations

import datetime

from conductor.db.tokens import TokenRows
from conductor.identity import Tokens

CREDENTIAL = "c" * 64


def same(user: str) -> str:
    return CREDENTIAL


def test_another_process_accepts_and_revokes(engines):
    first, second = Tokens(TokenRows(engines()), 3600), Tokens(TokenRows(engines()), 3600)
    token, record = first.issue("alice", CREDENTIAL, "admin", ["password"])
    found = second.find(token, same)
    assert found is not None and found.audit_id == record.audit_id
    assert found.expires_at == record.expires_at          # UTC both ways, SQLite too
    assert found.expires_at.tzinfo is not None and found.methods == ["password"]
    assert second.revoke(token) is True
    assert first.find(token, same) is None
    assert first.revoke(token) is False


def test_expired_rows_are_purged(engines):
    rows = TokenRows(engines())
    clock = [datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)]
    tokens = Tokens(rows, 60, lambda: clock[0])
    old, old_record = tokens.issue("alice", CREDENTIAL, None, ["password"])
    clock[0] += datetime.timedelta(hours=1)
    assert tokens.find(old, same) is None                  # expired
    new, _ = tokens.issue("alice", CREDENTIAL, None, ["password"])
    assert rows.get(old_record.token_hash) is None         # and gone
    assert tokens.find(new, same) is not None
