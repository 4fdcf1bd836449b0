"""The agent's async commands: each runs in its own thread, the API answers "busy"
(409) until it ends, and a failure is reported in the command's result. The router
and the sync commands are unit-tested in tests/unit/ramdisk_agent/test_server.py."""
from __future__ import annotations

import pytest
from werkzeug.test import Client

from ramdisk_agent.commands import CommandRunner
from ramdisk_agent.server import create_app
from tests.unit.ramdisk_agent.test_server import TOKEN, Gate, post


@pytest.fixture()
def setup():
    finished = []
    gate = Gate()
    runner = CommandRunner([gate], on_finished=lambda: finished.append(1))
    client = Client(create_app(runner, lambda: TOKEN))
    yield client, gate, finished
    gate.release.set()   # never leave a command thread blocked


def test_async_busy_then_done(setup):
    client, gate, finished = setup
    first = post(client, "gate.hold", {"value": 7}).get_json()
    assert first["command_status"] == "RUNNING"
    busy = post(client, "gate.echo", {"text": "x"})
    assert busy.status_code == 409 and busy.get_json()["faultcode"] == "Client"
    assert "busy" in busy.get_json()["faultstring"]
    # As IPA: while a command runs, even bad parameters get "busy" (409), not 400.
    busy_bad = post(client, "gate.echo", {"wrong": "x"})
    assert busy_bad.status_code == 409 and "busy" in busy_bad.get_json()["faultstring"]
    gate.release.set()
    done = client.get(f"/v1/commands/{first['id']}?wait=true&agent_token={TOKEN}").get_json()
    assert done["command_status"] == "SUCCEEDED" and done["command_result"] == {"value": 7}
    assert finished == [1]
    listing = client.get(f"/commands/?agent_token={TOKEN}").get_json()["commands"]
    assert [c["id"] for c in listing] == [first["id"]]
    assert post(client, "gate.echo", {"text": "again"}, prefix="").status_code == 200


def test_failed_command_error(setup):
    client, _, _ = setup
    body = post(client, "gate.explode", wait=True).get_json()
    assert body["command_status"] == "FAILED"
    assert body["command_error"] == {"type": "ImageChecksumError", "code": 500,
                                     "message": "checksum mismatch for http://x/img",
                                     "details": ""}
