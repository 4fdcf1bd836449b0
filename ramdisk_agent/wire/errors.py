"""Errors of the shared formats: data that cannot be used, whichever side read it.

The wire modules are imported by the conductor and the agent alike, so they cannot
raise either side's domain errors (``conductor.errors`` carries HTTP statuses the
agent must not import; ``ramdisk_agent.errors`` is the agent's). Each side turns
these into its own hierarchy where it calls the wire code, once: the conductor's
direct deploy raises ``InvalidParameter`` (400) for an unusable checksum, the agent
``InvalidContent`` (400) or ``DeltaDeployError`` (the step fails, the conductor falls
back to the full image).
"""
from __future__ import annotations


class WireError(ValueError):
    """Base of the wire errors: the message says what is wrong with the data."""


class DeltaError(WireError):
    """A delta payload that cannot be trusted or applied; the message says why."""


class ChecksumError(WireError):
    """An image checksum that is missing, malformed, or of a refused algorithm."""
