"""The host-mode agent's own logic: flags, the saved token, the patching commands."""
import argparse
import os
import stat

import pytest

from ramdisk_agent.host import mode as hostmode
from ramdisk_agent.commands import FAILED, SUCCEEDED, CommandRunner
from ramdisk_agent.errors import InvalidCommandParams
from ramdisk_agent.extensions.patching import PatchingExtension

ENGINE = ["--base-url", "http://127.0.0.1:1/feed/rel-1.0", "--sw-version", "1.0"]


@pytest.mark.parametrize("argv, message", [
    (["--api-url", "http://x"], "--base-url and --sw-version are required"),
    (["--api-url", "http://x", *ENGINE], "--node-uuid or --mac"),
    (["--api-url", "http://x", "--mac", "m", "--listen", "nope", *ENGINE], "HOST:PORT"),
    (["--api-url", "http://x", "--mac", "m", "--heartbeat-interval", "0", *ENGINE],
     "must be positive"),
])
def test_bad_flags(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        hostmode._parse(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_listen_and_defaults():
    args = hostmode._parse(["--api-url", "http://x", "--node-uuid", "u",
                            "--listen", "[::1]:0", *ENGINE])
    assert (args.listen_host, args.listen_port, args.heartbeat_interval) == ("::1", 0, 30.0)


class FakeEngine:
    def __init__(self, fail=False):
        self.fail, self.calls = fail, []

    def install(self, force, locked):
        self.calls.append((force, locked))
        if self.fail:
            raise RuntimeError("dnf exploded")
        return {"status": True, "restart_agent": False}


def agent(tmp_path, engine=None, **flags):
    args = argparse.Namespace(api_url="http://127.0.0.1:1", insecure=False, ca_file=None,
                              state_dir=str(tmp_path / "state"), node_uuid=None, mac=["m"])
    vars(args).update(flags)
    return hostmode.HostAgent(args, engine or FakeEngine())


def test_token_is_saved_private_and_bound_to_the_api(tmp_path):
    first = agent(tmp_path)
    first.node_uuid, first.token = "uuid-1", "tok"
    first._save_token()
    path = tmp_path / "state" / hostmode.TOKEN_FILE
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    again = agent(tmp_path)
    assert again._load_token() and (again.node_uuid, again.token) == ("uuid-1", "tok")
    assert not agent(tmp_path, api_url="http://elsewhere")._load_token()
    assert not agent(tmp_path, node_uuid="uuid-2")._load_token()
    for bad in ("not json", "[1, 2]", '{"token": 5, "api_url": "http://127.0.0.1:1"}',
                '{"token": "t", "api_url": "http://127.0.0.1:1"}'):
        path.write_text(bad)
        assert not agent(tmp_path)._load_token()


def test_install_command_answers_its_request_even_when_it_fails(tmp_path):
    host = agent(tmp_path, FakeEngine(fail=True))
    runner = CommandRunner([PatchingExtension(host)])
    result = runner.execute("patching.install", {"force": True, "locked": False,
                                                 "request_id": "r1"})
    result.done.wait(5)
    assert result.command_status == FAILED and host.last_request == "r1"
    ok = agent(tmp_path)
    runner = CommandRunner([PatchingExtension(ok)])
    result = runner.execute("patching.install", {"force": False, "locked": True,
                                                 "request_id": "r2"})
    result.done.wait(5)
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
    result.done.wait(5)
    assert result.command_status == SUCCEEDED and host.engine.calls == [(True, None)]


def test_query_takes_no_params(tmp_path):
    runner = CommandRunner([PatchingExtension(agent(tmp_path))])
    with pytest.raises(InvalidCommandParams):
        runner.execute("patching.query", {"junk": 1})
    assert runner.list() == []


def test_query_wakes_the_heartbeat(tmp_path):
    host = agent(tmp_path)
    result = CommandRunner([PatchingExtension(host)]).execute("patching.query", {})
    assert result.command_status == SUCCEEDED and host._wake.is_set()


def test_restart_request_ends_the_agent_with_status_4(tmp_path):
    class SelfPatching(FakeEngine):
        def install(self, force, locked):
            return {"status": True, "restart_agent": True}

    host = agent(tmp_path, SelfPatching())
    host.install(force=True, locked=None, request_id="r3")
    assert host.exit_code == hostmode.RESTART_EXIT and host.last_request == "r3"
