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


class OmahaError(WireError):
    """An Omaha (update protocol) document that cannot be used; the message says why.
    The server answers it with 400 and changes nothing."""


class OmahaTooLarge(OmahaError):
    """The body is over the size cap; none of it was parsed."""


class OmahaMalformed(OmahaError):
    """Not a well-formed UTF-8 XML document of the expected kind (truncated, another
    encoding, another root element)."""


class OmahaForbiddenXml(OmahaError):
    """A DTD, an entity declaration or an external reference: refused before expansion
    (billion laughs, XXE)."""


class OmahaUnsupported(OmahaError):
    """A protocol version other than 3.0."""


class OmahaInvalid(OmahaError):
    """A required attribute missing, or a value of the wrong shape or length."""


class OmahaLimitExceeded(OmahaError):
    """More apps, events, elements or nesting than one update client sends."""
