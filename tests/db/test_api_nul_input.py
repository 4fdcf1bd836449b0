"""NUL characters in URLs and bodies, and unpaired surrogates in bodies: a 400 on
every database backend, with nothing stored.

PostgreSQL cannot store or even compare a text value holding NUL (0x00), so a NUL
that reached a query was a 500 there while SQLite answered normally; a lone surrogate
("\\ud800", valid JSON syntax) cannot be encoded to UTF-8 for either. The API refuses
both before any query (api/common.py: refuse_nul, json_body).
"""
from __future__ import annotations

import json

import pytest

from api import create_app
from conductor import config
from conductor.appliance import Appliance

LATEST = {"X-OpenStack-Ironic-API-Version": "latest"}


@pytest.fixture
def client(db_url, tmp_path):
    settings = config.from_options({"data_dir": str(tmp_path / "data"), "conductor.host": "test",
                                    "database.connection": db_url, "pxe.enabled": False})
    appliance = Appliance(settings)
    appliance.start()
    try:
        yield create_app(appliance.service).test_client()
    finally:
        appliance.stop()


@pytest.mark.parametrize("method, path, query, body", [
    ("GET", "/v1/nodes/a%00b", None, None),
    ("DELETE", "/v1/nodes/a%00b", None, None),
    ("GET", "/v1/ports/%00", None, None),
    ("GET", "/v1/nodes", {"marker": "a\x00b"}, None),
    ("GET", "/v1/nodes", {"provision_state": "\x00"}, None),
    ("GET", "/v1/nodes", {"driver": "x\x00"}, None),
    ("GET", "/v1/ports", {"node": "n\x00"}, None),
    ("GET", "/v1/ports", {"address": "\x00"}, None),
    ("GET", "/v1/lookup", {"addresses": "52:54:00:00:00:01,\x00"}, None),
    ("GET", "/v1/lookup", {"node_uuid": "\x00"}, None),
    ("GET", "/v1/drivers/fake%00", None, None),
    ("POST", "/v1/nodes", None, {"driver": "fake-hardware", "name": "a\x00b"}),
    ("POST", "/v1/nodes", None, {"driver": "fake-hardware", "extra": {"k\x00": 1}}),
    ("POST", "/v1/nodes", None, {"driver": "fake\x00hardware"}),
    ("POST", "/v1/nodes", None, {"driver": "fake-hardware", "description": "\ud800"}),
    ("POST", "/v1/nodes", None, {"driver": "fake-hardware", "extra": {"\udfff": "x"}}),
])
def test_unstorable_text_is_a_400_on_every_backend(client, method, path, query, body):
    response = client.open(path, method=method, query_string=query, json=body,
                           headers=LATEST)
    assert response.status_code == 400, response.get_data()
    message = json.loads(response.get_json()["error_message"])["faultstring"]
    assert "NUL" in message
    assert client.get("/v1/nodes", headers=LATEST).get_json()["nodes"] == []
