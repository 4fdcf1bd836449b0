"""sushy sessions shared through the DriverContext, and the one place where
sushy and requests errors become conductor errors.
"""
from __future__ import annotations

import collections
import logging
import re
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import requests
import sushy
from sushy import auth as sushy_auth
from sushy import exceptions as sushy_exc
from sushy.resources.system.system import System

from conductor import errors
from conductor.drivers.redfish.info import RedfishInfo, parse

if TYPE_CHECKING:
    from conductor.config import Settings
    from conductor.drivers.context import DriverContext

LOG = logging.getLogger(__name__)
T = TypeVar("T")


class NoAuth(sushy_auth.AuthBase):
    """No credentials configured: send none.

    sushy's basic auth would send ``Authorization: Basic None:None`` (requests
    stringifies the Nones), which only earns a confusing 401.
    """

    def _do_authenticate(self):
        pass

    def can_refresh_session(self):
        return False


#: redfish_auth_type -> sushy authentication class.
AUTH_CLASSES = {"basic": sushy_auth.BasicAuth, "session": sushy_auth.SessionAuth,
                "auto": sushy_auth.SessionOrBasicAuth}

#: sushy error -> (our error class, what went wrong, what the operator can do).
#: The first isinstance match wins, so subclasses come before their bases.
SUSHY_ERRORS = (
    (sushy_exc.MissingXAuthToken, errors.DriverError,
     "the service created no session token (X-Auth-Token)",
     "set driver_info.redfish_auth_type to 'basic'"),
    (sushy_exc.AccessError, errors.DriverError,
     "the service refused the credentials of user {user} (HTTP {status})",
     "check driver_info.redfish_username and redfish_password"),
    (sushy_exc.ResourceNotFoundError, errors.DriverError,
     "the service has no such resource (HTTP 404: {error})",
     "check driver_info.redfish_address and redfish_system_id"),
    (sushy_exc.ServerSideError, errors.DriverError,
     "the service failed with HTTP {status}: {detail}",
     "the BMC is faulty or busy; retry later or reset the BMC"),
    (sushy_exc.BadRequestError, errors.DriverError,
     "the service rejected the request (HTTP 400): {detail}", ""),
    (sushy_exc.HTTPError, errors.DriverError,
     "the service answered HTTP {status}: {detail}", ""),
    (sushy_exc.ConnectionError, errors.DriverError,
     "cannot reach the service: {reason}",
     "check driver_info.redfish_address and that the BMC is up"),
    (sushy_exc.InvalidParameterValueError, errors.InvalidParameter, "{error}", ""),
    (sushy_exc.UnknownDefaultError, errors.InvalidParameter,
     "the service does not have exactly one system",
     "set driver_info.redfish_system_id"),
    (sushy_exc.SushyError, errors.DriverError,
     "unexpected answer from the service: {error}", ""),
    (requests.JSONDecodeError, errors.DriverError,
     "the service did not answer with Redfish JSON",
     "check that driver_info.redfish_address points at a Redfish service"),
    (requests.RequestException, errors.DriverError, "HTTP failure: {error}", ""),
)

#: requests error behind a sushy ConnectionError -> short reason (first match wins).
CONNECTION_REASONS = (
    (requests.exceptions.SSLError,
     "TLS failure ({error}); check driver_info.redfish_verify_ca"),
    (requests.exceptions.ConnectTimeout, "connection timed out"),
    (requests.exceptions.ReadTimeout, "no answer within the read timeout"),
    (requests.exceptions.ConnectionError, "connection failed ({error})"),
)

#: The useful part of a requests/urllib3 error chain: "[Errno 111] Connection
#: refused" or "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: ...".
_ROOT_CAUSE = re.compile(r"\[(?:Errno -?\d+|SSL[^\]]*)\] [^'\"()]+")


def _connection_reason(exc: BaseException) -> str:
    cause = exc.__cause__ or exc.__context__
    for cls, text in CONNECTION_REASONS:
        if isinstance(cause, cls):
            found = _ROOT_CAUSE.search(str(cause))
            return text.format(
                error=found.group(0).strip() if found else type(cause).__name__)
    return str(exc)


def translate(exc: Exception, info: RedfishInfo, node: str, action: str):
    """The conductor error an operator sees for a sushy/requests failure."""
    for cls, error_cls, what, hint in SUSHY_ERRORS:  # noqa: B007 - used after the break
        if isinstance(exc, cls):
            what = what.format(
                user=repr(info.username), status=getattr(exc, "status_code", "?"),
                detail=getattr(exc, "detail", None) or "no details",
                reason=_connection_reason(exc) if cls is sushy_exc.ConnectionError else "",
                error=exc)
            break
    else:  # pragma: no cover - the table ends with the base classes
        error_cls, what, hint = errors.DriverError, str(exc), ""
    if info.auth_type == "session" and isinstance(exc, sushy_exc.AccessError):
        hint += (" (with redfish_auth_type 'session' it can also mean that the service "
                 "offers no sessions: try 'auto' or 'basic')")
    text = f"Redfish {action} failed for node {node} at {info.address}: {what}"
    return error_cls(text + (f"; {hint}." if hint else "."))


class SessionCache:
    """sushy roots keyed by address/credentials/verify/auth type, LRU-bounded.

    Lives in the DriverContext (``redfish_sessions``); nodes behind
    one BMC share a session, and a failed session is dropped so the next call
    logs in afresh.
    """

    def __init__(self, settings: Settings):
        self.settings = settings
        self._roots: collections.OrderedDict[tuple, sushy.Sushy] = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, info: RedfishInfo) -> sushy.Sushy:
        key = info.cache_key
        with self._lock:
            if key in self._roots:
                self._roots.move_to_end(key)
                return self._roots[key]
        root = self._connect(info)  # network I/O: never under the lock
        with self._lock:
            existing = self._roots.get(key)
            if existing is None:
                self._roots[key] = existing = root
                root = None
            while len(self._roots) > max(1, self.settings.redfish.connection_cache_size):
                _close(self._roots.popitem(last=False)[1])
        if root is not None:
            _close(root)  # another thread connected first
        return existing

    def _connect(self, info: RedfishInfo) -> sushy.Sushy:
        s = self.settings
        anonymous = info.username is None and info.password is None
        auth_class = NoAuth if anonymous else AUTH_CLASSES[info.auth_type]
        auth = auth_class(username=info.username, password=info.password)
        root = sushy.Sushy(
            info.address, root_prefix=info.root_prefix, verify=info.verify, auth=auth,
            # sushy uses one number for both: tries on connection errors, and
            # retries of a GET that got a 5xx.
            server_side_retries=max(1, s.redfish.connection_attempts),
            server_side_retries_delay=s.redfish.connection_retry_interval,
            read_timeout=s.redfish.read_timeout, connect_timeout=s.redfish.connect_timeout)
        _size_pool(root, pool_size(s))
        return root

    def evict(self, info: RedfishInfo, logout: bool = True) -> None:
        """Forget the session of ``info``; ``logout=False`` when the BMC is unreachable."""
        with self._lock:
            root = self._roots.pop(info.cache_key, None)
        if root is not None:
            _close(root, logout)

    def close(self) -> None:
        with self._lock:
            roots, self._roots = list(self._roots.values()), collections.OrderedDict()
        for root in roots:
            _close(root)


def pool_size(settings: Settings) -> int:
    """HTTP connections per Redfish endpoint: every thread that may talk to it at
    once (power-sync workers and conductor workers), at least requests' 10."""
    return max(10, settings.conductor.sync_power_state_workers + settings.conductor.workers)


def _size_pool(root: sushy.Sushy, size: int) -> None:
    """requests/urllib3 keep at most 10 connections per host; a sushy root is
    shared by every node behind one BMC address (an emulator or a chassis
    manager), so more threads than that would open connections the pool then
    discards ("Connection pool is full"). Size it for the threads we run."""
    session = root._conn._session
    for scheme in ("http://", "https://"):
        current = session.get_adapter(scheme)
        if type(current) is requests.adapters.HTTPAdapter:  # not sushy's TLS adapter
            session.mount(scheme, requests.adapters.HTTPAdapter(
                pool_connections=10, pool_maxsize=size, max_retries=current.max_retries))


def _close(root: sushy.Sushy, logout: bool = True) -> None:
    """Log out (DELETE the session) and drop the HTTP pool.

    sushy only does this in ``Sushy.__del__``, at whatever moment the garbage
    collector picks, and against a dead BMC that DELETE waits for the connect
    timeouts. So we do it here, or skip it, and then unset ``_auth`` so that
    ``__del__`` finds nothing left to do.
    """
    auth, root._auth = getattr(root, "_auth", None), None
    try:
        if auth is not None and logout:
            auth.close()
        root._conn.close()
    except Exception as exc:  # noqa: BLE001 - the BMC may be gone; nothing to do
        LOG.debug("Ignoring error while closing a Redfish session: %s", exc)


class RedfishClient:
    """One node's Redfish system: cached session, system lookup, translated errors."""

    def __init__(self, task, context: DriverContext):
        self.settings = context.settings
        self.node = task.node.uuid
        self.info = parse(task.driver_info, self.settings.redfish.auth_type)
        self.sessions = context.redfish_sessions

    def run(self, action: str, func: Callable[[System], T]) -> T:
        """``func(system)`` with every sushy/requests error translated, once."""
        started = time.monotonic()
        try:
            result = func(self.system())
        except errors.MetalcastError:
            raise
        except (sushy_exc.SushyError, requests.RequestException) as exc:
            self.sessions.evict(
                self.info, logout=not isinstance(exc, sushy_exc.ConnectionError))
            error = translate(exc, self.info, self.node, action)
            LOG.warning("%s", error)  # the message names the node
            raise error from exc
        LOG.debug("Node %s: Redfish %s took %.1f ms", self.node, action,
                  (time.monotonic() - started) * 1000)
        return result

    def system(self) -> System:
        """The node's System resource (freshly read)."""
        root = self.sessions.get(self.info)
        path = self.info.system_id or self._only_system(root)
        try:
            return root.get_system(path)
        except sushy_exc.ResourceNotFoundError:
            known = ", ".join(self._system_paths(root)) or "none"
            raise errors.InvalidParameter(
                f"Redfish system {path} of node {self.node} does not exist at "
                f"{self.info.address}; fix driver_info.redfish_system_id (the service "
                f"has: {known}).") from None

    def _only_system(self, root) -> str:
        paths = self._system_paths(root)
        if len(paths) != 1:
            raise errors.InvalidParameter(
                f"driver_info.redfish_system_id is required for node {self.node}: the "
                f"Redfish service at {self.info.address} has {len(paths)} systems "
                f"({', '.join(paths) or 'none'}).")
        return paths[0]

    @staticmethod
    def _system_paths(root) -> list[str]:
        return sorted(root.get_system_collection().members_identities)


class RedfishInterface:
    """Mixin of the redfish interfaces: offline validation and a client per call."""

    context: DriverContext

    def validate(self, task) -> None:
        """Check driver_info without talking to the BMC (the API thread calls this)."""
        parse(task.driver_info, self.context.settings.redfish.auth_type)

    def client(self, task) -> RedfishClient:
        return RedfishClient(task, self.context)
