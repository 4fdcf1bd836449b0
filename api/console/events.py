"""``/ui/events``: the live pages' server-sent events.

Each stream waits on the process's one change feed (conductor/service/changes.py);
it never queries the database itself. A stream holds a worker thread while it is
open, so streams run on threads of their own, not the API's (api/http_server.py
routes this path to them), and at most MAX_STREAMS are open at once: one more is
refused (503) and its browser retries later (EventSource's reconnect).
"""
from __future__ import annotations

import json
import threading
from collections.abc import Callable

import flask
from werkzeug import exceptions as http

from api.console.pages import bp, service
from conductor import errors

PATH = "/ui/events"
#: Open streams at most (the threads the listener keeps for them).
MAX_STREAMS = 64
#: A comment line this often: proxies keep the stream, a page that left is noticed
#: (at once where the server says so: waitress.client_disconnected).
KEEPALIVE = 15.0
#: How often a waiting stream asks whether its client is still there.
CHECK_EVERY = 1.0
#: What EventSource waits before it reconnects (ms).
RETRY_MS = 1000
SLOTS = "metalcast.console.streams"


def init_app(app: flask.Flask) -> None:
    app.extensions[SLOTS] = threading.BoundedSemaphore(MAX_STREAMS)


def _stream(feed, since: int | None, gone: Callable[[], bool]):
    subscription = feed.subscribe(since)
    try:
        yield f"retry: {RETRY_MS}\n: connected\n\n".encode()
        quiet = 0.0
        while not gone():
            batch = subscription.wait(CHECK_EVERY)
            if not batch:
                quiet += CHECK_EVERY
                if quiet >= KEEPALIVE:
                    quiet = 0.0
                    yield b": keep-alive\n\n"
                continue
            quiet = 0.0
            yield b"".join(f"data: {json.dumps(event, default=str)}\n\n".encode()
                           for event in batch)
    finally:  # the page left (the next write failed) or the server stops
        subscription.close()


@bp.get("/events")
def events():
    since = flask.request.args.get("since", "")
    if since and not since.isdigit():
        raise errors.InvalidParameter("since must be the page's event cursor (a number).")
    slots: threading.BoundedSemaphore = flask.current_app.extensions[SLOTS]
    if not slots.acquire(blocking=False):
        raise http.ServiceUnavailable(f"Too many live pages are open ({MAX_STREAMS}); "
                                      "this one updates when one closes.")
    gone = flask.request.environ.get("waitress.client_disconnected", lambda: False)
    response = flask.Response(_stream(service().changes, int(since) if since else None, gone),
                              mimetype="text/event-stream")
    response.call_on_close(slots.release)  # waitress closes every response it served
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Accel-Buffering"] = "no"
    return response
