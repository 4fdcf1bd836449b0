"""The image-update API: the public endpoints hosts use (api/updates/public.py: Omaha
``POST /v1/update/``, payloads, the update key, reboot leases) and the operator's REST
under ``/updates/v1/`` (api/updates/operator.py). Thin views over ``service.updates``
(conductor/service/updates.py)."""
from __future__ import annotations

import re

import flask

from api.updates import operator, public
from conductor.updates.leases import MAX_WAITING

PREFIX = "/updates/v1"
#: Whole paths open without credentials: update clients send none (like Nebraska's),
#: the lease route authenticates with the host agent's token instead.
PUBLIC_PATHS = re.compile(r"/v1/update/?|/updates/v1/(payloads/[^/]+|key|leases)/?")


def is_public(path: str) -> bool:
    return PUBLIC_PATHS.fullmatch(path) is not None


def is_updates_path(path: str) -> bool:
    """Paths without Ironic microversions."""
    return path.startswith(PREFIX + "/") or path == PREFIX or is_public(path)


#: Routes whose bodies are not JSON (Omaha XML, an image file): tests/security replays
#: their own hostile inputs.
RAW_BODIES = public.RAW_BODIES + operator.RAW_BODIES


#: app.extensions key (api.http_server.STREAMS): paths served on threads of their own.
STREAMS = "metalcast.streams"
#: Held lease acquires run on the stream threads, so that they never take the API's
#: worker threads; the waiting room bounds how many are held (MAX_WAITING).
LEASE_PATHS = frozenset({"/updates/v1/leases", "/updates/v1/leases/"})


def register(app: flask.Flask) -> None:
    app.register_blueprint(public.bp)
    app.register_blueprint(operator.bp, url_prefix=PREFIX)
    paths, most = app.extensions.get(STREAMS, (frozenset(), 0))
    app.extensions[STREAMS] = (paths | LEASE_PATHS, most + MAX_WAITING)


__all__ = ["PREFIX", "RAW_BODIES", "is_public", "is_updates_path", "register"]
