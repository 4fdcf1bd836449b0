"""Agent tokens as the server stores them, and the host agent's command credential.

The server keeps no agent token in plain text: it stores ``token_hash`` of it and
checks a heartbeat's token with :func:`token_matches` (constant time). The host
agent (``metalcast-agent host``) authenticates the conductor's calls to its command
API with :func:`host_command_token`, a one-way derivation of its token: the server
keeps that credential (encrypted) to call the agent, and nothing from which the
heartbeat token itself could be recovered. The ramdisk agent speaks the stock
ironic-python-agent protocol instead, where the conductor sends the lookup token
itself (conductor/drivers/internal_info.py says how that copy is stored).
"""
from __future__ import annotations

import hashlib
import hmac

#: Prefix of a stored token hash (the algorithm, so it can change later).
HASH_PREFIX = "sha256:"
#: What the host agent's command credential is derived for (HMAC message).
HOST_COMMAND_LABEL = b"metalcast host-agent command API v1"


def token_hash(token: str) -> str:
    """What the server stores instead of ``token`` (a 256-bit random secret: a plain
    SHA-256 is enough, there is nothing to brute-force)."""
    return HASH_PREFIX + hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def token_matches(stored_hash: str | None, presented: object) -> bool:
    """True when ``presented`` is the token whose hash is ``stored_hash``."""
    if not stored_hash or not isinstance(presented, str) or not presented:
        return False
    return hmac.compare_digest(stored_hash.encode("ascii", "replace"),
                               token_hash(presented).encode("ascii"))


def host_command_token(token: str) -> str:
    """The credential the conductor presents to a host agent's command API
    (``?agent_token=``): HMAC-SHA256 of a fixed label keyed with the agent's token."""
    return hmac.new(token.encode("utf-8"), HOST_COMMAND_LABEL, hashlib.sha256).hexdigest()
