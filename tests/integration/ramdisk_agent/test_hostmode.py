"""Host mode's ``patching.install`` as the agent runs it: an async command on its own
thread, answered with the request id even when the engine fails, and still accepted
after refused parameters (the rest of host mode: tests/unit/ramdisk_agent/test_hostmode.py)."""
from __future__ import annotations

import pytest

from ramdisk_agent.commands import CommandRunner
from ramdisk_agent.errors import InvalidCommandParams
from ramdisk_agent.extensions.patching import PatchingExtension
from ramdisk_agent.wire.statuses import FAILED, SUCCEEDED
from tests.unit.ramdisk_agent.test_hostmode import FakeEngine, agent


def test_install_command_answers_its_request_even_when_it_fails(tmp_path):
    host = agent(tmp_path, FakeEngine(fail=True))
    runner = CommandRunner([PatchingExtension(host)])
    result = runner.execute("patching.install", {"force": True, "locked": False,
                                                 "request_id": "r1"})
    assert result.done.wait(30), "the command did not end"
    assert result.command_status == FAILED and host.last_request == "r1"
    ok = agent(tmp_path)
    runner = CommandRunner([PatchingExtension(ok)])
    result = runner.execute("patching.install", {"force": False, "locked": True,
                                                 "request_id": "r2"})
    assert result.done.wait(30), "the command did not end"
    assert result.command_status == SUCCEEDED and ok.engine.calls == [(False, True)]
    assert ok.last_request == "r2"


@pytest.mark.parametrize("params, named", [
    ({"force": "yes"}, '"force" must be a boolean'),
    ({"locked": 1}, '"locked" must be a boolean'),
    ({"request_id": 7}, '"request_id" must be a string'),
    ({"bogus": True}, "unexpected keyword argument 'bogus'"),
])
def test_install_params_are_refused_in_the_request(tmp_path, params, named):
    """Bad params: InvalidCommandParams (400) before anything is recorded or run."""
    host = agent(tmp_path)
    runner = CommandRunner([PatchingExtension(host)])
    with pytest.raises(InvalidCommandParams) as exc:
        runner.execute("patching.install", params)
    assert exc.value.status_code == 400 and named in exc.value.message
    assert runner.list() == [] and host.engine.calls == [] and host.last_request is None
    result = runner.execute("patching.install", {"force": True, "request_id": "r3"})
    assert result.done.wait(30), "the command did not end"
    assert result.command_status == SUCCEEDED and host.engine.calls == [(True, None)]
