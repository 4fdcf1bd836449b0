"""The host-mode agent's own logic: flags, the saved token, the patching commands."""
import argparse
import os
import stat

import pytest

from ramdisk_agent import hostmode
from ramdisk_agent.commands import CommandRunner
from ramdisk_agent.errors import InvalidCommandParams
from ramdisk_agent.extensions.patching import PatchingExtension
from ramdisk_agent.wire.statuses import SUCCEEDED

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
