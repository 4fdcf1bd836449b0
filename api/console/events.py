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

import flask
from werkzeug import exceptions as http

from api.console.pages import bp, service
from conductor import errors

PATH = "/ui/events"
#: Open streams at most (the threads the listener keeps for them).
MAX_STREAMS = 64
#: A comment line this often: a page that left is noticed, proxies keep the stream.
KEEPALIVE = 15.0
#: What EventSource waits before it reconnects (ms).
RETRY_MS = 1000
SLOTS = "metalcast.console.streams"


def init_app(app: flask.Flask) -> None:
    app.extensions[SLOTS] = threading.BoundedSemaphore(MAX_STREAMS)


def _stream(feed, since: int | None):
    subscription = feed.subscribe(since)
    try:
        yield f"retry: {RETRY_MS}\n: connected\n\n".encode()
        while True:
            batch = subscription.wait(KEEPALIVE)
            if not batch:
                yield b": keep-alive\n\n"
                continue
            yield b"".join(f"data: {json.dumps(event, default=str)}\n\n".encode()
                           for event in batch)
    finally:  # the page left (the next write failed) or the server stops
        subscription.close()


@bp.get("/events")
def events():
    slots: threading.BoundedSemaphore = flask.current_app.extensions[SLOTS]
    if not slots.acquire(blocking=False):
        raise http.ServiceUnavailable(f"Too many live pages are open ({MAX_STREAMS}); "
                                      "this one updates when one closes.")
    since = flask.request.args.get("since", "")
    if since and not since.isdigit():
        slots.release()
        raise errors.InvalidParameter("since must be the page's event cursor (a number).")
    response = flask.Response(_stream(service().changes, int(since) if since else None),
                              mimetype="text/event-stream")
    response.call_on_close(slots.release)  # waitress closes every response it served
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Accel-Buffering"] = "no"
    return response
