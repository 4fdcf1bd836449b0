"""Identity v3: Keystone's password login, for clients that come with an openrc.

``POST /v3/auth/tokens`` checks an htpasswd user's password (api/auth.py, the same
check and limits as basic auth) and returns a token in ``X-Subject-Token`` with
Keystone's token body and a catalog of metalcast's APIs (documents.py); every API then
takes that token in ``X-Auth-Token`` (api/auth.py). ``GET`` validates a token
(``X-Subject-Token``) for the holder of a valid one (``X-Auth-Token``), ``DELETE``
revokes it; ``GET /v3`` is the version document keystoneauth reads from the auth URL,
which therefore ends in ``/v3``: ``GET /`` stays Ironic's list alone, since keystoneauth
would take a v3 listed there for the newest baremetal version.
The routes need no basic credentials. With ``auth_strategy = none`` there are no users,
so every login is refused: clients on loopback use no authentication at all.
Errors take Keystone's body, ``{"error": {"code", "title", "message"}}``.
"""
from __future__ import annotations

import flask
from werkzeug import exceptions as http
from werkzeug.http import HTTP_STATUS_CODES

from api import auth, common
from api.identity import documents
from api.identity.login import REFUSED, PasswordLogin, object_id, parse
from conductor import errors
from conductor.identity import IdentityToken

bp = flask.Blueprint("identity", __name__, url_prefix="/v3")

SUBJECT_HEADER = "X-Subject-Token"


def base_url() -> str:
    """The API's URL as clients reach it ([api] public_endpoint, else the request's)."""
    public = flask.current_app.config.get("PUBLIC_ENDPOINT")
    return (public or flask.request.host_url).rstrip("/")


@bp.get("")
def version():
    return {"version": documents.version(base_url())}


@bp.post("/auth/tokens")
def issue():
    login = parse(common.json_body())
    user, credential = _authenticate(login)
    project = _project(login)
    token, record = common.service().tokens.issue(user, credential, project, ["password"])
    response = flask.jsonify(documents.token(record, _catalog()))
    response.status_code = 201
    response.headers[SUBJECT_HEADER] = token
    return response


@bp.get("/auth/tokens")
def validate():
    subject = _subject()
    response = flask.jsonify(documents.token(subject, _catalog()))
    response.headers[SUBJECT_HEADER] = flask.request.headers[SUBJECT_HEADER]
    return response


@bp.delete("/auth/tokens")
def revoke():
    _subject()
    if not common.service().tokens.revoke(flask.request.headers[SUBJECT_HEADER]):
        raise errors.NotFound("Could not find token.")
    return "", 204


def _authenticate(login: PasswordLogin) -> tuple[str, str]:
    """(user name, its credential fingerprint) once the password is checked."""
    checker = auth.password_checker()
    if checker is None:  # auth_strategy none: there are no users
        raise errors.NotAuthorized(REFUSED)
    user = login.user_name
    if login.user_id is not None:
        user = next((name for name in checker.names()
                     if object_id("user", name) == login.user_id), login.user_id)
    assert user is not None  # parse() gives an id or a name
    try:
        checker.verify(user, login.password)
    except errors.NotAuthorized:
        raise errors.NotAuthorized(REFUSED) from None
    credential = checker.credential(user)
    if credential is None:  # removed from the file since the check
        raise errors.NotAuthorized(REFUSED)
    return user, credential


def _project(login: PasswordLogin) -> str | None:
    """The name of the project the token is for (None: unscoped); 401 if not one of
    [identity] projects."""
    if not login.scoped:
        return None
    for name in common.service().settings.identity.project_names:
        if login.project_name == name or login.project_id == object_id("project", name):
            return name
    raise errors.NotAuthorized(REFUSED)


def _catalog() -> list[dict] | None:
    if "nocatalog" in flask.request.args:
        return None
    return documents.catalog(common.service().settings, base_url())


def _subject() -> IdentityToken:
    """The token named by X-Subject-Token, for a caller with a valid X-Auth-Token."""
    if auth.find_token(flask.request.headers.get(auth.TOKEN_HEADER)) is None:
        raise errors.NotAuthorized(REFUSED)
    subject = auth.find_token(flask.request.headers.get(SUBJECT_HEADER))
    if subject is None:
        raise errors.NotFound("Could not find token.")
    return subject


def _keystone_error(status: int, message: str) -> flask.Response:
    response = flask.jsonify({"error": {"code": status, "message": message,
                                        "title": HTTP_STATUS_CODES.get(status, "Error")}})
    response.status_code = status
    if status == 401:
        response.headers["WWW-Authenticate"] = f'Keystone uri="{base_url()}/v3"'
    return response


@bp.errorhandler(errors.MetalcastError)
def _domain_error(exc: errors.MetalcastError):
    return _keystone_error(exc.status_code, str(exc))


@bp.errorhandler(http.HTTPException)
def _http_error(exc: http.HTTPException):
    response = _keystone_error(exc.code or 500, exc.description or exc.name)
    for name, value in exc.get_headers():  # Retry-After of a 429 (api/throttle.py), Allow
        if name.lower() != "content-type":
            response.headers[name] = value
    return response
