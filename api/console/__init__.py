"""The operator console at ``/ui/``: server-rendered pages (jinja2), one small
hand-written script and one style sheet, served by ``metalcast serve`` behind the
API's authentication.

Views call the conductor service facade, as the REST API does; every form posts a
CSRF token (csrf.py); live updates come from the process's one change publisher
(conductor/service/changes.py) over server-sent events (events.py), whose streams
waitress serves on worker threads of their own (api/http_server.py), bounded.
"""
from __future__ import annotations

import flask

from api.console import (  # noqa: F401 - their routes
    conductors,
    csrf,
    events,
    fleet,
    node,
    orchestration,
    pages,
    patches,
    updates,
)

#: app.extensions key (api.http_server.STREAMS): the paths of long-lived streams and
#: how many may be open, which the listener serves on threads of their own.
STREAMS = "metalcast.streams"


def register(app: flask.Flask) -> None:
    """Serve the console on ``app`` (the API port's app)."""
    csrf.init_app(app)
    events.init_app(app)
    app.register_blueprint(pages.bp)
    paths, most = app.extensions.get(STREAMS, (frozenset(), 0))  # other streams too
    app.extensions[STREAMS] = (paths | {events.PATH}, most + events.MAX_STREAMS)
