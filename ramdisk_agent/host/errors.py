"""The one error of the host patching engine."""
from __future__ import annotations

from ramdisk_agent.errors import AgentError


class PatchEngineError(AgentError):
    """rpm, dnf or a repo failed; the message says which and why."""
