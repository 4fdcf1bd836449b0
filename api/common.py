"""Small helpers shared by the blueprints: the service handle, bodies, paging."""
from __future__ import annotations

from urllib.parse import urlencode

import flask

from conductor import errors


def service():
    """The conductor facade this app was created with."""
    return flask.current_app.extensions["metalcast.service"]


def json_body():
    """The request's JSON body; a clear 400 when it is missing or malformed."""
    data = flask.request.get_json(silent=True)
    if data is None:
        raw = flask.request.get_data(cache=True)
        if not raw.strip():
            raise errors.InvalidParameter("A JSON request body is required.")
        raise errors.InvalidParameter("Malformed JSON in request body; check quoting and "
                                      "commas (the body must be valid JSON).")
    return data


def int_arg(name: str, default=None, minimum: int = 1):
    raw = flask.request.args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise errors.InvalidParameter(f"{name} must be an integer, not {raw!r}") from None
    if value < minimum:
        raise errors.InvalidParameter(f"{name} must be >= {minimum}")
    return value


def bool_arg(name: str):
    raw = flask.request.args.get(name)
    if raw is None:
        return None
    lowered = raw.lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise errors.InvalidParameter(f"{name} must be a boolean, not {raw!r}")


def page_limit() -> int:
    maximum = flask.current_app.config["MAX_LIMIT"]
    limit = int_arg("limit", maximum, minimum=0)
    return maximum if limit == 0 else min(limit, maximum)


def next_link(base: str, path: str, limit: int, items: list, marker_of) -> dict:
    """Ironic's ``next`` URL when this page is full (the SDK follows it)."""
    if not items or len(items) < limit:
        return {}
    args = {k: v for k, v in flask.request.args.items() if k != "marker"}
    args.update(limit=limit, marker=marker_of(items[-1]))
    # openstacksdk's nodes(details=True) pages through /v1/nodes/detail by
    # following ``next`` verbatim: the link must stay on the detail route.
    if flask.request.path.rstrip("/").endswith("/detail"):
        path = f"{path}/detail"
    return {"next": f"{base}/v1/{path}?{urlencode(args)}"}
