"""Request IDs (``req-<uuid4>``, as Ironic's ``x-openstack-request-id``): one per API
request, on its response and on every log line the work it started writes.

The API sets the current ID for the request's thread (``api/request_id.py``, WSGI
middleware outermost on every app); the worker pool runs each task in a copy of the
requesting thread's context (``Workers.spawn``), so a deploy's lines carry the ID of
the request that started it; a host install sends it to the host's agent as the
install's ``request_id``, and the report answering it names it. ``RequestIdFilter``
puts the ID on log records as ``%(request_id)s`` ("-" outside a request).

The ID lives in a ``ContextVar``: the standard per-thread (and per-context) value, not
shared state: each request and each task sees only its own. The authenticated user
of the request rides along the same way (``CURRENT_USER``): node history rows name
who asked for the change, as Ironic's do.
"""
from __future__ import annotations

import contextvars
import logging
import uuid

CURRENT: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "metalcast_request_id", default=None)
CURRENT_USER: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "metalcast_request_user", default=None)
#: The log format of ``metalcast serve``: Ironic's, with the request ID in brackets.
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


def new() -> str:
    return f"req-{uuid.uuid4()}"


def current() -> str | None:
    """The ID of the request this thread (or task) works for, if any."""
    return CURRENT.get()


def current_user() -> str | None:
    """The authenticated user of that request (None: no authentication, or none)."""
    return CURRENT_USER.get()


class RequestIdFilter(logging.Filter):
    """Adds ``record.request_id`` (a handler filter: it sees every propagated record)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = CURRENT.get() or "-"
        return True


def install_log_format(handlers: list[logging.Handler]) -> None:
    """Give ``handlers`` the filter and :data:`LOG_FORMAT` (``metalcast serve``)."""
    for handler in handlers:
        if not any(isinstance(f, RequestIdFilter) for f in handler.filters):
            handler.addFilter(RequestIdFilter())
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
