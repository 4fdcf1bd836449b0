"""CSRF protection for every console action.

A page's first response sets a random nonce in a cookie (HttpOnly, SameSite=Strict,
path /ui); every form carries HMAC(app key, nonce, user) and every POST must bring it
back with that cookie, from this origin (Origin and Sec-Fetch-Site when the browser
sends them). Another site can neither read the token nor send the cookie; a token
taken from one user's page is refused with another user's credentials.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
from urllib.parse import urlsplit

import flask
from werkzeug import exceptions as http

COOKIE = "metalcast_console"
FIELD = "csrf_token"
HEADER = "X-CSRF-Token"
KEY = "metalcast.console.csrf_key"
#: Requests that change nothing need no token.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
REFUSED = ("This action was refused: its form has expired or was not sent from this "
           "console (CSRF check). Reload the page and try again.")


def init_app(app: flask.Flask) -> None:
    """A fresh key per app: tokens of an earlier process are refused after a restart."""
    app.extensions[KEY] = secrets.token_bytes(32)


def _nonce() -> str:
    nonce = flask.g.get("console_nonce")
    if nonce is None:
        given = flask.request.cookies.get(COOKIE, "")
        nonce = given if 16 <= len(given) <= 64 and given.isalnum() else None
        flask.g.console_new_cookie = nonce is None
        nonce = nonce or secrets.token_hex(16)
        flask.g.console_nonce = nonce
    return nonce


def token() -> str:
    """The token this page's forms carry."""
    user = flask.g.get("user") or ""
    message = f"{_nonce()}\0{user}".encode()
    return hmac.new(flask.current_app.extensions[KEY], message, hashlib.sha256).hexdigest()


def set_cookie(response: flask.Response) -> flask.Response:
    """Give a new visitor its nonce (after_request of the console's pages)."""
    if flask.g.get("console_new_cookie"):
        response.set_cookie(COOKIE, flask.g.console_nonce, httponly=True, samesite="Strict",
                            secure=flask.request.is_secure, path="/ui")
    return response


def _same_origin() -> bool:
    request = flask.request
    if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
        return False
    origin = request.headers.get("Origin")
    if origin is None:  # not sent (an older browser, curl): the token still decides
        return True
    parts = urlsplit(origin)
    return f"{parts.scheme}://{parts.netloc}" == request.host_url.rstrip("/")


def check() -> None:
    """Refuse (403) an unsafe request without this session's token from this origin."""
    if flask.request.method in SAFE_METHODS:
        return
    if COOKIE not in flask.request.cookies or not _same_origin():
        raise http.Forbidden(REFUSED)
    sent = flask.request.form.get(FIELD) or flask.request.headers.get(HEADER) or ""
    if not hmac.compare_digest(sent.encode(), token().encode()):
        raise http.Forbidden(REFUSED)
