"""The one error handler: a refused patch operation reaches sw-patch in StarlingX's
body (HTTP 200, the reason in ``error``); elsewhere it is an Ironic 409."""
from __future__ import annotations

import json

import flask

from api import errors as api_errors
from conductor import errors


def _app() -> flask.Flask:
    app = flask.Flask("test")
    api_errors.init_app(app)

    def refuse():
        raise errors.PatchOpError("Patch P_1 is not in Available state")

    app.add_url_rule("/patching/v1/delete/P_1", "patching", refuse, methods=["POST"])
    app.add_url_rule("/v1/other", "other", refuse)
    return app


def test_patch_op_error_is_a_conflict_in_the_one_hierarchy():
    exc = errors.PatchOpError("Rejected: One or more nodes are installing patches.")
    assert isinstance(exc, errors.Conflict) and exc.status_code == 409
    assert exc.to_dict()["faultstring"] == "Rejected: One or more nodes are installing patches."


def test_starlingx_clients_get_their_body_and_ironic_clients_theirs():
    client = _app().test_client()
    reply = client.post("/patching/v1/delete/P_1")
    assert reply.status_code == 200
    assert reply.get_json() == {"info": "", "warning": "",
                                "error": "Patch P_1 is not in Available state\n"}
    reply = client.get("/v1/other")
    assert reply.status_code == 409
    assert json.loads(reply.get_json()["error_message"])["faultstring"] == \
        "Patch P_1 is not in Available state"
