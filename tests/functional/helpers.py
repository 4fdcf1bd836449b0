"""Small helpers shared by the functional tests."""
from __future__ import annotations

import uuid


def unique(prefix: str) -> str:
    """A node name no other test (or earlier run against the same server) uses."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def mac() -> str:
    """A random locally administered unicast MAC address."""
    return "02:" + ":".join(f"{b:02x}" for b in uuid.uuid4().bytes[:5])
