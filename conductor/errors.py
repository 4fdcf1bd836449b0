"""One error hierarchy for the whole appliance.

Every domain error carries an HTTP status and a message template; the API layer
renders it once, in the body shape each client expects. The formats shared with the
agent (ramdisk_agent/wire/) raise their own ``WireError``s, which the conductor
turns into these where it calls them (an unusable image checksum: InvalidParameter).
"""
from __future__ import annotations

import errno


class MetalcastError(Exception):
    """Base of every error the appliance raises on purpose."""

    status_code = 500
    message = "An unknown error occurred."
    code = "Server"

    def __init__(self, message: str | None = None, **kwargs):
        if message is None:
            message = self.message % kwargs if kwargs else self.message
        self.kwargs = kwargs
        super().__init__(message)

    def to_dict(self) -> dict:
        client = 400 <= self.status_code < 500
        return {"faultcode": "Client" if client else "Server",
                "faultstring": str(self), "debuginfo": None}


class Invalid(MetalcastError):
    status_code = 400
    message = "Invalid input: %(reason)s"


class InvalidParameter(Invalid):
    message = "%(reason)s"


class InvalidStateRequested(Invalid):
    message = ('The requested action "%(action)s" can not be performed on node '
               '"%(node)s" while it is in state "%(state)s".')


class NotAuthorized(MetalcastError):
    status_code = 401
    message = "Not authorized."


class NotFound(MetalcastError):
    status_code = 404
    message = "Resource could not be found."


class NodeNotFound(NotFound):
    message = "Node %(node)s could not be found."


class PortNotFound(NotFound):
    message = "Port %(port)s could not be found."


class ConductorNotFound(NotFound):
    message = ("Conductor %(conductor)s could not be found. List the conductors with "
               "`baremetal conductor list`.")


class NotAcceptable(MetalcastError):
    status_code = 406
    message = "Request not acceptable."


class NoValidHost(Invalid):
    """No live conductor serves the node's hardware type in its conductor group (the
    hash ring has nobody to map it to; Ironic's NoValidHost)."""

    message = "No valid host was found. Reason: %(reason)s"


class Conflict(MetalcastError):
    status_code = 409
    message = "Conflict."


class InvalidTransition(Conflict):
    """The state machine (conductor/states.py) has no such event in this state; Ironic's
    InvalidState. Callers that start an action turn it into InvalidStateRequested (400)."""

    message = "%(reason)s"


class NodeLocked(Conflict):
    message = ("Node %(node)s is locked by host %(host)s, please retry after "
               "the current operation is completed.")


class ConductorAlreadyRegistered(Conflict):
    message = ("Conductor %(conductor)s is already registered and alive (it heartbeats "
               "within [conductor] heartbeat_timeout). Give this process another name "
               "([DEFAULT] host), or stop the other one and retry after its heartbeat "
               "times out.")


class DuplicateName(Conflict):
    message = "A node with name %(name)s already exists."


class MACAlreadyExists(Conflict):
    message = "A port with MAC address %(mac)s already exists."


class NodeAssociated(Conflict):
    message = ("Node %(node)s is associated with instance %(instance)s.")


class PatchOpError(Conflict):
    """A patch operation is refused (unknown patch, wrong state, a requirement or a
    semantic check); the text is what ``sw-patch`` prints (conductor/patching/)."""

    message = "%(reason)s"


class ServiceUnavailable(MetalcastError):
    status_code = 503
    message = "Service unavailable."


class ConcurrentActionLimit(ServiceUnavailable):
    message = ("Unable to process request at this time. The concurrent "
               "%(task_type)s action limit (%(limit)s) has been reached. "
               "Please retry later.")


class NoFreeConductorWorker(ServiceUnavailable):
    message = "Requested action cannot be performed due to lack of free conductor workers."


class InsufficientStorage(MetalcastError):
    """The disk is full: the write was refused and nothing was half-written. Raised
    where a write fails with ENOSPC/EDQUOT (the patch store, uploads) and where the
    database says it is full (conductor/db/engine.py); ``path`` is where to free space."""

    status_code = 507
    message = "no space left on device: free space in %(path)s"


#: errno values that mean "the disk (or the user's quota) is full".
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` is an OSError saying the disk or the quota is full."""
    return isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS


class DriverError(MetalcastError):
    """A hardware or protocol peer failed; raised by adapters only."""

    status_code = 502
    message = "Driver error: %(reason)s"


class UnsupportedCommand(DriverError):
    """The BMC answered that it cannot do this (IPMI: invalid command or data field)."""


class AgentConnectionFailed(DriverError):
    """The ramdisk agent's command API could not be reached (conductor/drivers/deploy/client.py)."""

    message = "Connection to agent failed: %(reason)s"


class AgentCommandError(DriverError):
    """The agent answered a command with an error (busy, bad token, failed command)."""

    message = "Agent command error: %(reason)s"


class ConfigError(MetalcastError):
    message = "Configuration error: %(reason)s"


class SecretsError(MetalcastError):
    """A stored secret cannot be decrypted (the key file changed); conductor/secrets.py."""

    message = "%(reason)s"


class TftpRefusal(MetalcastError):
    """A TFTP request refused; answered with a TFTP ERROR packet carrying ``tftp_code``
    (conductor/netboot/tftp.py), never over HTTP."""

    status_code = 400

    def __init__(self, tftp_code: int, message: str):
        super().__init__(message)
        self.tftp_code = tftp_code


def error_text(exc: BaseException) -> str:
    """The message an operator reads in last_error and logs: a domain error's own
    text, anything else prefixed with its type (an unexpected bug must be findable)."""
    if isinstance(exc, MetalcastError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"

