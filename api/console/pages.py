"""The console's blueprint and what every page shares: the layout's context (CSRF
token, navigation), HTML errors, the WWW-Authenticate challenge a browser needs to
ask for the API's credentials, and headers that keep the pages out of frames."""
from __future__ import annotations

import flask
from werkzeug import exceptions as http

from api import common
from api.console import csrf
from conductor import errors

bp = flask.Blueprint("console", __name__, url_prefix="/ui", template_folder="templates",
                     static_folder="static", static_url_path="/static")

#: Top navigation: (endpoint, label).
NAV = (("console.fleet_page", "Fleet"), ("console.patches_page", "Patches"),
       ("console.orchestration_page", "Orchestration"), ("console.updates_page", "Updates"),
       ("console.conductors_page", "Conductors"))
#: Every console response: no framing (click-jacking), no sniffing, scripts only ours.
SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": ("default-src 'self'; script-src 'self'; style-src 'self'; "
                                "img-src 'self' data:; frame-ancestors 'none'; "
                                "form-action 'self'; base-uri 'none'"),
    "Cache-Control": "no-store",
}


def service():
    return common.service()


def live_cursor() -> int:
    """The change feed's cursor for a live page: take it BEFORE reading what the page
    shows, so the page's stream replays whatever changed after that read."""
    return service().changes.cursor()


def render(template: str, status: int = 200, **context) -> tuple[str, int]:
    """A page in the layout, with the CSRF token its forms carry (a live page passes
    ``cursor``: where its event stream starts)."""
    return flask.render_template(f"console/{template}", nav=NAV, csrf_token=csrf.token(),
                                 csrf_field=csrf.FIELD, **context), status


@bp.before_request
def _check_csrf() -> None:
    csrf.check()


@bp.after_request
def _headers(response: flask.Response) -> flask.Response:
    for name, value in SECURITY_HEADERS.items():
        if name == "Cache-Control" and flask.request.endpoint == "console.static":
            continue
        response.headers.setdefault(name, value)
    if response.status_code == 401:  # the browser asks for the API's credentials
        response.headers["WWW-Authenticate"] = 'Basic realm="metalcast", charset="UTF-8"'
    return csrf.set_cookie(response)


@bp.errorhandler(errors.MetalcastError)
def _domain_error(exc: errors.MetalcastError):
    return _error_page(exc.status_code, str(exc))


@bp.errorhandler(http.HTTPException)
def _http_error(exc: http.HTTPException):
    return _error_page(exc.code or 500, exc.description or exc.name)


def _error_page(status: int, message: str):
    return flask.render_template("console/error.html", nav=NAV, status=status,
                                 message=message, csrf_token="", csrf_field=csrf.FIELD), status


@bp.get("/")
def index():
    return flask.redirect(flask.url_for("console.fleet_page"))
