"""The host-mode agent's own logic: flags, the issued token file, the kept TLS
identity, the patching commands."""
import argparse
import json
import os

import pytest

from ramdisk_agent import hostmode
from ramdisk_agent.commands import CommandRunner
from ramdisk_agent.errors import HostCredentialsError, InvalidCommandParams
from ramdisk_agent.extensions.patching import PatchingExtension
from ramdisk_agent.host import credentials
from ramdisk_agent.wire.agent_tokens import host_command_token
from ramdisk_agent.wire.statuses import SUCCEEDED

ENGINE = ["--base-url", "http://127.0.0.1:1/feed/rel-1.0", "--sw-version", "1.0"]


@pytest.mark.parametrize("argv, message", [
    (["--api-url", "http://x"], "--base-url and --sw-version are required"),
    (["--api-url", "http://x", "--mac", "m", *ENGINE], "unrecognized arguments: --mac"),
    (["--api-url", "http://x", "--listen", "nope", *ENGINE], "HOST:PORT"),
    (["--api-url", "http://x", "--heartbeat-interval", "0", *ENGINE], "must be positive"),
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
                              state_dir=str(tmp_path / "state"), node_uuid=None,
                              token_file=None)
    vars(args).update(flags)
    return hostmode.HostAgent(args, engine or FakeEngine())


def write_token(path, text, mode=0o600):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.chmod(path, mode)
    return path


def test_token_file_as_the_api_issues_it(tmp_path):
    path = write_token(tmp_path / "state" / credentials.TOKEN_FILE,
                       json.dumps({"token": "tok", "node_uuid": "uuid-1"}) + "\n")
    host = agent(tmp_path)
    host.load_token()
    assert (host.node_uuid, host.token) == ("uuid-1", "tok")
    # The conductor authenticates with a credential derived from the token, not the token.
    assert host.command_token == host_command_token("tok") != "tok"
    bare = write_token(tmp_path / "bare", "tok2\n")
    host = agent(tmp_path, token_file=str(bare), node_uuid="uuid-2")
    host.load_token()
    assert (host.node_uuid, host.token) == ("uuid-2", "tok2")
    assert path.exists()


@pytest.mark.parametrize("text, mode, flags, named", [
    (None, 0o600, {}, "No host agent token file"),
    ('{"token": "t", "node_uuid": "u"}', 0o644, {}, "chmod 600"),
    ("", 0o600, {}, "holds no token"),
    ("two words", 0o600, {}, "holds no token"),
    ('{"token": 5}', 0o600, {}, "holds no token"),
    ("[1, 2]", 0o600, {}, "holds no token"),
    ("tok", 0o600, {}, "give --node-uuid"),
    ('{"token": "t", "node_uuid": "u1"}', 0o600, {"node_uuid": "u2"}, "issued for node u1"),
])
def test_unusable_token_files_are_refused_clearly(tmp_path, text, mode, flags, named):
    if text is not None:
        write_token(tmp_path / "state" / credentials.TOKEN_FILE, text, mode)
    host = agent(tmp_path, **flags)
    with pytest.raises(HostCredentialsError) as exc:
        host.load_token()
    assert named in exc.value.message and host.token is None


def test_tls_identity_is_kept_until_the_host_changes(tmp_path):
    first = credentials.tls_identity(tmp_path, "192.0.2.7")
    key = tmp_path / credentials.TLS_DIR / credentials.KEY_NAME
    assert os.stat(key).st_mode & 0o077 == 0
    assert os.stat(tmp_path / credentials.TLS_DIR).st_mode & 0o077 == 0
    assert credentials.tls_identity(tmp_path, "192.0.2.7") == first    # a restart
    moved = credentials.tls_identity(tmp_path, "192.0.2.8")
    assert moved[2] != first[2]                                         # another host
    near_end = credentials.tls_identity(
        tmp_path, "192.0.2.8", now=os.path.getmtime(key) + 3640 * credentials.DAY)
    assert near_end[2] != moved[2]


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


def test_a_refused_token_makes_the_agent_read_its_file_again(tmp_path, caplog):
    path = write_token(tmp_path / "state" / credentials.TOKEN_FILE,
                       json.dumps({"token": "old", "node_uuid": "uuid-1"}))
    host = agent(tmp_path)
    host.load_token()
    host._reload_token()                               # nothing new: says what to do
    assert host.token == "old" and "metalcast host token uuid-1" in caplog.text
    write_token(path, json.dumps({"token": "new", "node_uuid": "uuid-1"}))
    host._reload_token()                               # the operator issued a new one
    assert (host.token, host.command_token) == ("new", host_command_token("new"))
    path.unlink()
    host._reload_token()                               # a lost file keeps what it has
    assert host.token == "new" and "No host agent token file" in caplog.text
