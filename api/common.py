"""Small helpers shared by the blueprints: the service handle, bodies, paging."""
from __future__ import annotations

import json
from urllib.parse import urlencode

import flask
from werkzeug import exceptions as http

from conductor import errors


def service():
    """The conductor facade this app was created with."""
    return flask.current_app.extensions["metalcast.service"]


#: What a JSON body must be, by the type the route expects -> how to say it.
_DOCUMENT_NAMES: dict[type, str] = {dict: "a JSON object",
                                     list: "a JSON array (a JSON patch)"}


#: The deepest nesting a JSON body may have (a node's dicts and a JSON patch need a
#: few levels; deeper documents only exhaust the recursion of whatever walks them).
MAX_DEPTH = 32


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def json_body(expected: type = dict, optional: bool = False):
    """The request's JSON body, which must be ``expected`` (dict or list).

    The one place request bodies are parsed, so every route refuses the same way:
    415 for a Content-Type that is not JSON, 400 for a missing (unless ``optional``:
    then None), malformed, non-standard (NaN, Infinity), too deeply nested or
    wrongly typed document, or one whose text no database can store (a NUL
    character, an unpaired UTF-16 surrogate such as "\\ud800").
    """
    raw = flask.request.get_data(cache=True)  # capped per route before (api/limits.py)
    if not raw.strip():
        if optional:
            return None
        raise errors.InvalidParameter("A JSON request body is required.")
    if flask.request.mimetype and not flask.request.is_json:
        raise http.UnsupportedMediaType(
            f"The request body must be JSON (Content-Type: application/json), not "
            f"{flask.request.mimetype!r}.")
    try:
        data = json.loads(raw, parse_constant=_refuse_constant)
    except RecursionError:
        raise errors.InvalidParameter("Malformed JSON in request body: nested too "
                                      "deeply.") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise errors.InvalidParameter(f"Malformed JSON in request body: {exc}; check "
                                      "quoting and commas.") from None
    if not isinstance(data, expected):
        raise errors.InvalidParameter(f"The request body must be {_DOCUMENT_NAMES[expected]}"
                                      f", not {_json_type(data)}.")
    if _nested_deeper(data, MAX_DEPTH):
        raise errors.InvalidParameter(f"Malformed JSON in request body: nested deeper than "
                                      f"{MAX_DEPTH} levels.")
    if _has_unstorable_text(data):
        raise errors.InvalidParameter(
            "The request body holds a NUL character (\\u0000) or an unpaired surrogate "
            "(\\ud800-\\udfff); neither is allowed.")
    return data


def _json_type(value) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
            type(None): "null"}.get(type(value), "a number")


def _nested_deeper(value, limit: int) -> bool:
    """Whether arrays and objects nest more than ``limit`` levels (walked without
    recursion: the check must not fail the way it guards against)."""
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        children = item.values() if isinstance(item, dict) else item \
            if isinstance(item, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        pending.extend((child, depth + 1) for child in children)
    return False


def _has_unstorable_text(value) -> bool:
    """Whether any string (key or value) in the document holds a NUL character (which
    PostgreSQL refuses) or a lone surrogate (which is not UTF-8 at all)."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if "\x00" in item or not (item.isascii() or _utf8(item)):
                return True
        elif isinstance(item, dict):
            pending.extend(item)
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def refuse_nul() -> None:
    """before_request: a NUL in the path or query string is a 400 before any lookup
    (PostgreSQL cannot even compare text holding one: a 500 there otherwise)."""
    args = flask.request.args
    if "\x00" in flask.request.path or any("\x00" in key or "\x00" in value
                                           for key, value in args.items(multi=True)):
        raise errors.InvalidParameter("NUL characters (%00) are not allowed in the URL.")


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
    args: dict[str, object] = {k: v for k, v in flask.request.args.items() if k != "marker"}
    args.update(limit=limit, marker=marker_of(items[-1]))
    # openstacksdk's nodes(details=True) pages through /v1/nodes/detail by
    # following ``next`` verbatim: the link must stay on the detail route.
    if flask.request.path.rstrip("/").endswith("/detail"):
        path = f"{path}/detail"
    return {"next": f"{base}/v1/{path}?{urlencode(args)}"}
