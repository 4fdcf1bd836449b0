"""Errors of the agent, shaped the way ironic-python-agent reports them.

The command API renders :class:`AgentError` as ``{faultcode, faultstring}`` with the
error's HTTP status; a failing command stores :meth:`AgentError.serialize` in
``command_error`` (``{type, code, message, details}``, IPA's shape) so the conductor
can copy the message into the node's ``last_error``.

Every error the agent defines is here. The shared formats (ramdisk_agent/wire/)
raise their own ``WireError``s, which the agent turns into these where it calls them.
"""
from __future__ import annotations


class AgentError(Exception):
    """Base of every error the agent reports on purpose."""

    status_code = 500
    faultcode = "Server"

    def __init__(self, message: str, details: str = ""):
        super().__init__(message)
        self.message = message
        self.details = details

    def serialize(self) -> dict:
        return {"type": type(self).__name__, "code": self.status_code,
                "message": self.message, "details": self.details}

    def fault(self) -> dict:
        return {"faultcode": self.faultcode, "faultstring": self.message}


class InvalidContent(AgentError):
    """The request body or command parameters are wrong."""
    status_code = 400
    faultcode = "Client"


class InvalidCommand(InvalidContent):
    """The command name does not exist."""


class InvalidCommandParams(InvalidContent):
    """The command exists but its parameters are wrong (IPA's InvalidCommandParamsError):
    refused in the request, before anything is recorded or started."""


class TokenInvalid(AgentError):
    status_code = 401
    faultcode = "Client"

    def __init__(self):
        super().__init__("Token invalid.")


class RequestedObjectNotFound(AgentError):
    status_code = 404
    faultcode = "Client"


class MethodNotAllowed(AgentError):
    """The path exists but not for this HTTP method."""
    status_code = 405
    faultcode = "Client"

    def __init__(self):
        super().__init__("The method is not allowed for the requested URL.")


class BodyTooLarge(AgentError):
    """The request announces a larger body than its route takes; none of it is read."""
    status_code = 413
    faultcode = "Client"


class AgentIsBusy(AgentError):
    """Another command is still running: one command at a time."""
    status_code = 409
    faultcode = "Client"

    def __init__(self, running: str):
        super().__init__(f"Agent is busy: command {running} is still running.")


class ImageDownloadError(AgentError):
    """The image could not be fetched (HTTP error, too many dropped connections)."""


class ImageChecksumError(AgentError):
    """The image's hash did not match the expected value."""


class ImageWriteError(AgentError):
    """Writing the image to the disk failed, or it does not fit."""


class DeviceNotFound(AgentError):
    """No disk matches the root device hints (or there is no disk at all)."""


class LookupFailed(AgentError):
    """The API never answered the lookup with our node."""


class HostCredentialsError(AgentError):
    """The host agent's token file or TLS files are missing, unreadable or unsafe."""


class HeartbeatError(AgentError):
    """The API refused a heartbeat; ``conflict`` is True for 409 (node locked)."""

    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status, self.conflict = status, status == 409


class DeltaDeployError(AgentError):
    """The delta could not be fetched, trusted or applied (the step fails and the
    conductor falls back to the full image)."""


class PatchEngineError(AgentError):
    """Host patching: rpm, dnf or a repo failed; the message says which and why."""


class MetadataUnsupported(PatchEngineError):
    """A repo's metadata uses a compression the stdlib cannot read (fall back to dnf)."""


class GptError(AgentError):
    """A disk's GPT cannot be read or safely rewritten (no valid copy, truncated, not
    GPT); nothing was written."""


class InvalidSlot(GptError):
    """An A/B slot edit names a partition that does not exist or a value out of range."""
    status_code = 400
    faultcode = "Client"


class UpdateEngineError(AgentError):
    """The host's A/B update engine failed a step (check, download, verify, install,
    lease); ``omaha_code`` is the update_engine error code it reports in its 3/0 event
    (ramdisk_agent/wire/omaha_codes.py). The passive slot is left unbootable."""

    def __init__(self, message: str, omaha_code: int = 1, details: str = ""):
        super().__init__(message, details)
        self.omaha_code = omaha_code
