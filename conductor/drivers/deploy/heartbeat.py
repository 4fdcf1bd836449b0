"""What an agent sends with a heartbeat, and the checks every agent's heartbeat gets.

The ramdisk agent (conductor/service/ramdisk.py) and the host agent
(conductor/patching/host_channel.py) heartbeat with the same body: a callback URL
for their command API, their version and TLS certificate, the token they got.
"""
from __future__ import annotations

import dataclasses
from urllib.parse import ParseResult, urlparse

from cryptography import x509

from conductor import errors

AGENT_STATUSES = ("start", "end", "error")
TOKEN_ERROR = "Invalid or missing agent token received."


@dataclasses.dataclass(frozen=True)
class Heartbeat:
    """One heartbeat body, as the API parsed it."""

    callback_url: str
    agent_token: str | None = None
    agent_version: str | None = None
    agent_verify_ca: str | None = None
    agent_status: str | None = None
    agent_status_message: str | None = None


def check_callback_url(url: str, require_tls: bool) -> ParseResult:
    """The parsed ``callback_url`` of a heartbeat (ramdisk or host agent), or InvalidParameter
    when it is not an http(s) URL with a host, or plain http while TLS is required."""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise errors.InvalidParameter('An issue with the supplied "callback_url" has '
                                      "been detected.")
    if parsed.scheme != "https" and require_tls:
        raise errors.InvalidParameter(
            f"The agent callback URL {url} is not HTTPS and [agent] require_tls is "
            "enabled; start the agent with TLS (or set require_tls = false).")
    return parsed


def check_pem_certificate(pem: str) -> None:
    """InvalidParameter unless a heartbeat's ``agent_verify_ca`` is a PEM certificate."""
    try:
        x509.load_pem_x509_certificate(pem.encode())
    except (ValueError, TypeError):
        raise errors.InvalidParameter('"agent_verify_ca" is not a PEM certificate.') from None
