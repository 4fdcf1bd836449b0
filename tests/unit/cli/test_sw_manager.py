"""``sw-manager`` prints what StarlingX 6.0.0's client prints for the same strategy
(recorded from its _display_strategy), sends StarlingX's bodies with its defaults,
and explains failures; tests/functional/test_sw_manager.py runs both clients against
a real server."""
from __future__ import annotations

import copy
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests

from cli import identity, sw_manager, sw_manager_api
from cli import sw_manager_output as out
from cli.sw_manager_api import ApiError, Unreachable
from tests.unit.cli.strategy_documents import ABORTED, APPLYING, BUILDING, DOCUMENTS

RECORDED = json.loads((Path(__file__).parent / "sw_manager_recorded.json").read_text())


class FakeApi:
    """Records calls; answers from a list (one per call; an exception is raised)."""

    def __init__(self, *answers):
        self.answers, self.calls = list(answers), []

    def _next(self, call):
        self.calls.append(call)
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def show(self, kind):
        return self._next(("show", kind))

    def create(self, kind, body):
        return self._next(("create", kind, body))

    def delete(self, kind, force):
        return self._next(("delete", kind, force))

    def action(self, kind, body):
        return self._next(("action", kind, body))


def run(monkeypatch, capsys, api: FakeApi, *argv: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sw_manager, "connect", lambda args: api)
    rc = sw_manager.main(list(argv))
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


# -- the layout -------------------------------------------------------------------
@pytest.mark.parametrize("key", sorted(k for k in RECORDED if not k.startswith("_")))
def test_render_matches_starlingx_line_for_line(key):
    name, flags = key.rsplit("-", 1)
    lines = out.render(out.parse(DOCUMENTS[name]), flags[0] == "1", flags[1] == "1")
    assert "\n".join(lines) + "\n" == "\n".join(RECORDED[key])


def test_fields_end_at_column_42_with_starlingx_trailing_space():
    assert out.field(2, "state", "applying") == "  state:" + " " * 34 + "applying "
    assert out.field(12, "timeout", 60, "seconds").index("60") == 42
    # a name longer than the column: no padding, as StarlingX
    assert out.field(2, "x" * 45, 1) == "  " + "x" * 45 + ":1 "


def test_serial_workers_show_no_max_parallel_and_unknown_names_say_so():
    lines = out.render(out.parse(dict(APPLYING, **{"worker-apply-type": "serial",
                                                   "name": "other"})))
    assert lines[0] == "Strategy Unknown Strategy:"
    assert not any("max-parallel" in line for line in lines)


@pytest.mark.parametrize("path,named", [
    (("apply-phase", "stages", 1, "steps", 2, "entity-names"),
     "strategy.apply-phase.stages[1].steps[2].entity-names"),
    (("abort-phase",), "strategy.abort-phase"),
    (("state",), "strategy.state")])
def test_a_document_missing_a_key_is_named(path, named):
    doc = copy.deepcopy(APPLYING)
    where = doc
    for key in path[:-1]:
        where = where[key]
    del where[path[-1]]
    with pytest.raises(out.BadDocument, match=f"lacks {named.replace('[', '.').rsplit('.', 1)[0]}"):
        out.parse(doc)


def test_a_document_of_the_wrong_shape_is_refused():
    with pytest.raises(out.BadDocument, match="no list at strategy.apply-phase.stages"):
        out.parse(dict(APPLYING, **{"apply-phase": dict(APPLYING["apply-phase"], stages={})}))
    with pytest.raises(out.BadDocument, match="no object"):
        out.parse(["not", "a", "strategy"])


# -- the commands -------------------------------------------------------------------
CREATE_DEFAULTS = {"controller-apply-type": "serial", "swift-apply-type": "ignore",
                   "default-instance-action": "stop-start", "storage-apply-type": "serial",
                   "worker-apply-type": "serial", "alarm-restrictions": "strict"}


def test_create_sends_starlingx_defaults_and_prints_the_strategy(monkeypatch, capsys):
    api = FakeApi(BUILDING)
    rc, stdout, _ = run(monkeypatch, capsys, api, "patch-strategy", "create")
    assert rc == 0 and api.calls == [("create", "sw-patch", CREATE_DEFAULTS)]
    assert stdout.splitlines() == RECORDED["building-00"][:-1]


def test_create_with_every_option(monkeypatch, capsys):
    api = FakeApi(APPLYING)
    rc, _, _ = run(monkeypatch, capsys, api, "patch-strategy", "create",
                   "--controller-apply-type", "ignore", "--storage-apply-type", "parallel",
                   "--worker-apply-type", "parallel", "--max-parallel-worker-hosts", "100",
                   "--instance-action", "migrate", "--alarm-restrictions", "relaxed")
    assert rc == 0
    assert api.calls[0][2] == {
        "controller-apply-type": "ignore", "swift-apply-type": "ignore",
        "default-instance-action": "migrate", "storage-apply-type": "parallel",
        "worker-apply-type": "parallel", "max-parallel-worker-hosts": 100,
        "alarm-restrictions": "relaxed"}


@pytest.mark.parametrize("argv,says", [
    (["--max-parallel-worker-hosts", "1"], "from 2 to 100, got 1"),
    (["--max-parallel-worker-hosts", "101"], "from 2 to 100, got 101"),
    (["--max-parallel-worker-hosts", "two"], "got 'two'"),
    (["--controller-apply-type", "parallel"], "invalid choice: 'parallel'"),
    (["--alarm-restrictions", "lax"], "invalid choice: 'lax'")])
def test_create_refuses_bad_values_before_calling(monkeypatch, capsys, argv, says):
    api = FakeApi()
    with pytest.raises(SystemExit) as exited:
        run(monkeypatch, capsys, api, "patch-strategy", "create", *argv)
    assert exited.value.code == 2 and says in capsys.readouterr().err
    assert api.calls == []


@pytest.mark.parametrize("argv,body", [
    ([], {"action": "apply-all"}),
    (["--stage-id", "3"], {"action": "apply-stage", "stage-id": 3})])
def test_apply_bodies(monkeypatch, capsys, argv, body):
    api = FakeApi(APPLYING)
    rc, stdout, _ = run(monkeypatch, capsys, api, "patch-strategy", "apply", *argv)
    assert (rc, api.calls) == (0, [("action", "sw-patch", body)])
    assert stdout.splitlines() == RECORDED["applying-00"][:-1]


@pytest.mark.parametrize("argv,body", [
    ([], {"action": "abort"}),
    (["--stage-id", "1"], {"action": "abort-stage", "stage-id": 1})])
def test_abort_bodies(monkeypatch, capsys, argv, body):
    api = FakeApi(ABORTED)
    rc, _, _ = run(monkeypatch, capsys, api, "patch-strategy", "abort", *argv)
    assert (rc, api.calls) == (0, [("action", "sw-patch", body)])


@pytest.mark.parametrize("stage", ["-1", "x", "1.5", "", "²", "9" * 5000])
def test_a_stage_id_must_be_a_stage_number(monkeypatch, capsys, stage):
    with pytest.raises(SystemExit):
        run(monkeypatch, capsys, FakeApi(), "patch-strategy", "apply", "--stage-id", stage)
    assert "expected a stage number" in capsys.readouterr().err


def test_delete_and_force(monkeypatch, capsys):
    api = FakeApi(None, None)
    assert run(monkeypatch, capsys, api, "patch-strategy", "delete")[:2] == \
        (0, "Strategy deleted\n")
    assert run(monkeypatch, capsys, api, "patch-strategy", "delete", "--force")[0] == 0
    assert api.calls == [("delete", "sw-patch", False), ("delete", "sw-patch", True)]


def test_force_is_hidden_as_in_starlingx(capsys):
    with pytest.raises(SystemExit):
        sw_manager.main(["patch-strategy", "delete", "--help"])
    assert "--force" not in capsys.readouterr().out


def test_show_without_strategy(monkeypatch, capsys):
    assert run(monkeypatch, capsys, FakeApi(None), "patch-strategy", "show") == \
        (0, "No strategy available\n", "")


@pytest.mark.parametrize("flags,key", [([], "applying-00"), (["--details"], "applying-10"),
                                       (["--active"], "applying-01"),
                                       (["--details", "--active"], "applying-11")])
def test_show_flags(monkeypatch, capsys, flags, key):
    rc, stdout, _ = run(monkeypatch, capsys, FakeApi(APPLYING), "patch-strategy", "show",
                        *flags)
    assert rc == 0 and stdout == "\n".join(RECORDED[key])


def test_show_json_is_the_api_document(monkeypatch, capsys):
    rc, stdout, _ = run(monkeypatch, capsys, FakeApi(APPLYING), "patch-strategy", "show",
                        "--format", "json")
    assert rc == 0 and json.loads(stdout) == {"strategy": APPLYING}


@pytest.mark.parametrize("argv,status,message,hint", [
    (["create"], 409, "A sw-patch strategy exists (uuid 6f0b, state applying)",
     "delete it first: sw-manager patch-strategy delete (--force while it is building, "
     "applying or aborting)"),
    (["apply"], 404, "No strategy", "create one first: sw-manager patch-strategy create"),
    (["delete"], 409, "strategy is applying",
     "abort it first (sw-manager patch-strategy abort), or delete --force"),
    (["apply", "--stage-id", "2"], 400, "stage id 2 is not the next stage", None)])
def test_failures_give_the_server_message_and_what_next(monkeypatch, capsys, argv, status,
                                                        message, hint):
    rc, stdout, stderr = run(monkeypatch, capsys, FakeApi(ApiError(status, message)),
                             "patch-strategy", *argv)
    assert (rc, stdout) == (1, "")
    assert stderr == f"Error: {message}\n" + (f"{hint}\n" if hint else "")


def test_unreachable_and_bad_documents_exit_1_without_traceback(monkeypatch, capsys):
    rc, _, stderr = run(monkeypatch, capsys, FakeApi(Unreachable("cannot reach it")),
                        "patch-strategy", "show")
    assert (rc, stderr) == (1, "Error: cannot reach it\n")
    rc, _, stderr = run(monkeypatch, capsys, FakeApi({"uuid": "x"}), "patch-strategy", "show")
    assert rc == 1 and stderr.startswith("Error: the API's strategy lacks")


# -- --watch ----------------------------------------------------------------------
def _state(doc, state, **phase):
    return dict(doc, state=state, **{"apply-phase": dict(doc["apply-phase"], **phase)})


def test_watch_prints_each_change_once_until_final(monkeypatch, capsys):
    sleeps = []
    monkeypatch.setattr("time.sleep", sleeps.append)
    applied = _state(APPLYING, "applied", inprogress=False, result="success")
    api = FakeApi(APPLYING, APPLYING, Unreachable("down"), Unreachable("down"), applied)
    rc, stdout, stderr = run(monkeypatch, capsys, api, "patch-strategy", "show", "--watch",
                             "--interval", "0.5")
    assert rc == 0 and sleeps == [0.5] * 4
    assert stdout.count("Strategy Patch Strategy:") == 2      # unchanged once: not again
    assert "apply-result:                           success" in stdout
    assert stderr == "down; retrying every 0.5 s\n"            # said once per outage


@pytest.mark.parametrize("final,rc", [("applied", 0), ("ready-to-apply", 0),
                                      ("apply-failed", 1), ("aborted", 1),
                                      ("build-failed", 1)])
def test_watch_exit_status_says_how_it_ended(monkeypatch, capsys, final, rc):
    monkeypatch.setattr("time.sleep", lambda s: None)
    api = FakeApi(_state(ABORTED, final))
    assert run(monkeypatch, capsys, api, "patch-strategy", "show", "--watch")[0] == rc


def test_watch_of_a_deleted_strategy_and_ctrl_c(monkeypatch, capsys):
    monkeypatch.setattr("time.sleep", lambda s: None)
    rc, stdout, _ = run(monkeypatch, capsys, FakeApi(APPLYING, None), "patch-strategy",
                        "show", "--watch")
    assert rc == 1 and stdout.endswith("No strategy available\n")
    rc, _, stderr = run(monkeypatch, capsys, FakeApi(APPLYING, KeyboardInterrupt()),
                        "patch-strategy", "show", "--watch")
    assert (rc, stderr) == (130, "\n")


@pytest.mark.parametrize("interval", ["0", "-1", "soon", "nan", "inf", "1e400"])
def test_watch_interval_must_be_positive(monkeypatch, capsys, interval):
    with pytest.raises(SystemExit):
        run(monkeypatch, capsys, FakeApi(), "patch-strategy", "show", "--watch",
            "--interval", interval)


# -- where the API is ---------------------------------------------------------------
CATALOG = [{"type": "nfv", "name": "vim", "endpoints": [
    {"interface": i, "region": r, "url": f"http://{r}-{i}:4545/"}
    for r in ("RegionOne", "SystemController") for i in ("public", "internal")]},
    {"type": "baremetal", "name": "ironic", "endpoints": [
        {"interface": "public", "region": "RegionOne", "url": "http://x:6385"}]}]


def test_the_catalog_gives_the_vim_endpoint_of_region_and_interface():
    login = identity.Login("t", CATALOG)
    assert login.service_url("vim", "nfv", "SystemController", "internal") == \
        "http://SystemController-internal:4545"
    assert login.service_url("vim", "nfv", None, "public") == "http://RegionOne-public:4545"
    with pytest.raises(identity.LoginFailed, match="offers RegionOne/public, RegionOne/"
                       "internal, SystemController/public, SystemController/internal"):
        login.service_url("vim", "nfv", "RegionTwo", "public")
    with pytest.raises(identity.LoginFailed, match="has no such service"):
        identity.Login("t", CATALOG[1:]).service_url("vim", "nfv", None, "public")


def test_an_openrc_needs_url_user_and_password(monkeypatch):
    for name in identity.ENVIRONMENT.values():
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(identity.LoginFailed) as failed:
        identity.Openrc.from_options({"auth_url": "http://k/v3"})
    assert "--os-username (or OS_USERNAME), --os-password (or OS_PASSWORD)" in str(failed.value)
    monkeypatch.setenv("OS_USERNAME", "admin")
    monkeypatch.setenv("OS_PASSWORD", "pw")
    openrc = identity.Openrc.from_options({"auth_url": "http://k:5000"})
    assert openrc.tokens_url == "http://k:5000/v3/auth/tokens"
    assert (openrc.project_name, openrc.user_domain_name, openrc.interface) == \
        ("admin", "Default", "public")
    assert identity.Openrc("http://k/v3/", "u", "p").tokens_url == "http://k/v3/auth/tokens"


def _args(**kw):
    base = {"url": None, "username": None, "password": None, "debug": False}
    base.update({f"os_{field}": None for field in identity.ENVIRONMENT})
    return SimpleNamespace(**dict(base, **kw))


@pytest.fixture
def no_env(monkeypatch):
    for name in (*identity.ENVIRONMENT.values(), "METALCAST_URL", "METALCAST_USERNAME",
                 "METALCAST_PASSWORD", "OS_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)


def test_connect_with_an_openrc_uses_the_token_and_the_catalog(monkeypatch, no_env):
    logins = []

    def fake_login(openrc):
        logins.append(openrc)
        return identity.Login("tok", CATALOG)
    monkeypatch.setattr(identity, "login", fake_login)
    monkeypatch.setenv("OS_AUTH_URL", "http://k/v3")
    monkeypatch.setenv("OS_USERNAME", "admin")
    monkeypatch.setenv("OS_PASSWORD", "pw")
    monkeypatch.setenv("OS_REGION_NAME", "SystemController")
    api = sw_manager_api.connect(_args(os_interface="internal"))
    assert api.url == "http://SystemController-internal:4545"
    assert api.session.headers["X-Auth-Token"] == "tok" and api.session.auth is None
    assert logins[0].interface == "internal"
    # METALCAST_URL wins over OS_AUTH_URL; an explicit --os-auth-url wins over both
    monkeypatch.setenv("METALCAST_URL", "http://m:6385")
    assert sw_manager_api.connect(_args()).url == "http://m:6385"
    assert len(logins) == 1
    assert sw_manager_api.connect(_args(os_auth_url="http://k/v3")).url.endswith(":4545")


def test_connect_with_basic_credentials(monkeypatch, no_env):
    monkeypatch.setenv("METALCAST_USERNAME", "operator")
    api = sw_manager_api.connect(_args(url="http://m:1/", password="pw"))
    assert (api.url, api.session.auth) == ("http://m:1", ("operator", "pw"))
    assert "X-Auth-Token" not in api.session.headers


def _response(status: int, body: bytes, content_type="application/json"):
    response = requests.Response()
    response.status_code, response._content = status, body
    response.headers["Content-Type"] = content_type
    response.reason = "Reason"
    return response


@pytest.mark.parametrize("body,text", [
    (b'{"faultstring": "stage id 2 is not the next stage"}', "stage id 2 is not the next stage"),
    (json.dumps({"error_message": json.dumps({"faultstring": "No strategy"})}).encode(),
     "No strategy"),
    (b'{"error_message": "plain"}', "plain"),
    (b"<html>bad gateway</html>", "<html>bad gateway</html>"),
    (b"", "Reason")])
def test_error_text_reads_every_error_body(body, text):
    assert sw_manager_api.error_text(_response(400, body)) == text


# -- metalcast's image-strategy family -------------------------------------------------
IMAGE_SUM = "sha256:" + "ab" * 32


def _image_doc(**options):
    doc = {k: v for k, v in APPLYING.items() if k not in (
        "controller-apply-type", "storage-apply-type", "swift-apply-type",
        "default-instance-action")}
    doc.update({"name": "image-update", "image": "http://img/v2.img",
                "image-checksum": IMAGE_SUM, "delta-url": None, "delta-version": None})
    doc.update(options)
    return doc


def test_image_create_body(monkeypatch, capsys):
    api = FakeApi(_image_doc())
    rc, stdout, _ = run(monkeypatch, capsys, api, "image-strategy", "create", "--image",
                        "http://img/v2.img", "--image-checksum", IMAGE_SUM,
                        "--worker-apply-type", "parallel", "--max-parallel-worker-hosts", "2")
    assert rc == 0 and api.calls == [("create", "image-update", {
        "image": "http://img/v2.img", "image-checksum": IMAGE_SUM,
        "worker-apply-type": "parallel", "alarm-restrictions": "strict",
        "max-parallel-worker-hosts": 2})]
    assert stdout.splitlines()[:8] == [
        "Strategy Image Update Strategy:",
        out.field(2, "strategy-uuid", APPLYING["uuid"]),
        out.field(2, "image", "http://img/v2.img"),
        out.field(2, "image-checksum", IMAGE_SUM),
        out.field(2, "worker-apply-type", "parallel"),
        out.field(2, "max-parallel-worker-hosts", 2),
        out.field(2, "alarm-restrictions", "strict"),
        out.field(2, "current-phase", "apply")]


def test_image_delta_is_shown_when_set_and_sent(monkeypatch, capsys):
    api = FakeApi(_image_doc(**{"delta-url": "http://img/v1-v2.delta",
                                "delta-version": "2", "worker-apply-type": "serial"}))
    rc, stdout, _ = run(monkeypatch, capsys, api, "image-strategy", "create", "--image",
                        "http://img/v2.img", "--image-checksum", IMAGE_SUM, "--delta-url",
                        "http://img/v1-v2.delta", "--delta-version", "2")
    assert rc == 0 and api.calls[0][2]["delta-url"] == "http://img/v1-v2.delta"
    assert api.calls[0][2]["delta-version"] == "2"
    assert out.field(2, "delta-url", "http://img/v1-v2.delta") in stdout.splitlines()
    assert "max-parallel-worker-hosts" not in stdout          # serial


def test_image_strategy_needs_image_and_checksum(monkeypatch, capsys):
    with pytest.raises(SystemExit):
        run(monkeypatch, capsys, FakeApi(), "image-strategy", "create", "--image", "x")
    assert "--image-checksum" in capsys.readouterr().err
    with pytest.raises(out.BadDocument, match="lacks strategy.image"):
        out.parse({k: v for k, v in _image_doc().items() if k != "image"})
    with pytest.raises(SystemExit):        # no patch options on an image strategy
        run(monkeypatch, capsys, FakeApi(), "image-strategy", "create", "--image", "x",
            "--image-checksum", IMAGE_SUM, "--controller-apply-type", "serial")


def test_image_family_calls_its_own_path(monkeypatch, capsys):
    api = FakeApi(None, _image_doc())
    assert run(monkeypatch, capsys, api, "image-strategy", "show")[1] == \
        "No strategy available\n"
    assert run(monkeypatch, capsys, api, "image-strategy", "apply")[0] == 0
    assert [call[:2] for call in api.calls] == [("show", "image-update"),
                                                ("action", "image-update")]


# -- what a hostile server or host could send --------------------------------------------
def test_control_characters_never_reach_the_terminal(monkeypatch, capsys):
    """A host's error text travels into a step's reason; an escape sequence in it (or in
    a server's error) is shown escaped, not executed by the operator's terminal."""
    doc = copy.deepcopy(APPLYING)
    step = doc["apply-phase"]["stages"][1]["steps"][2]
    step["reason"] = "failed\x1b]0;pwned\x07\x1b[2J\nfake-line: ok\x9b"
    step["entity-names"] = ["compute-0\x1b[31m"]
    rc, stdout, _ = run(monkeypatch, capsys, FakeApi(doc), "patch-strategy", "show",
                        "--details")
    assert rc == 0 and not any(ord(c) < 32 and c != "\n" or 127 <= ord(c) < 160
                               for c in stdout)
    assert "reason:                       failed\\x1b]0;pwned\\x07\\x1b[2J\\x0afake-line: " \
           "ok\\x9b " in stdout
    assert "['compute-0\\x1b[31m']" in stdout
    rc, _, stderr = run(monkeypatch, capsys, FakeApi(ApiError(400, "bad\x1b[2J")),
                        "patch-strategy", "apply")
    assert (rc, stderr) == (1, "Error: bad\\x1b[2J\n")


def test_plain_text_is_untouched():
    assert out.printable("compute-0 ü ✓ [1, 2]") == "compute-0 ü ✓ [1, 2]"


class FakeSession:
    """requests.Session's ``request``, answering from a list (an exception is raised)."""

    def __init__(self, *answers):
        self.answers, self.calls = list(answers), []

    def request(self, method, url, json=None, timeout=None):
        self.calls.append((method, url, json))
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer


@pytest.mark.parametrize("answer,raised,says", [
    (_response(404, b'{"faultstring": "Not Found"}'), ApiError,
     "http://m serves no /api/orchestration/sw-patch/strategy"),
    (_response(401, b""), ApiError, "authentication failed: set METALCAST_USERNAME"),
    (_response(200, b"<html>"), ApiError, "the API answered no JSON"),
    (_response(200, b"[1]"), ApiError, "unexpected answer"),
    (_response(503, b'{"faultstring": "Orchestration is disabled"}'), ApiError,
     "Orchestration is disabled"),
    (requests.ConnectionError(), Unreachable, "cannot reach the orchestration API at http://m"),
    (requests.exceptions.ChunkedEncodingError(), Unreachable, "cannot reach"),
    (requests.Timeout(), Unreachable, "did not answer within 40 s")])
def test_show_answers_that_are_not_a_strategy(answer, raised, says):
    api = sw_manager_api.OrchestrationApi("http://m/", FakeSession(answer))
    with pytest.raises(raised, match=says.replace("(", r"\(")):
        api.show("sw-patch")


def test_the_calls_and_their_answers():
    session = FakeSession(_response(200, b'{"strategy": null}'),
                          _response(200, json.dumps({"strategy": APPLYING}).encode()),
                          _response(202, json.dumps({"strategy": APPLYING}).encode()),
                          _response(200, b'{"strategy": null}'),
                          _response(202, b'{"strategy": null}'))
    api = sw_manager_api.OrchestrationApi("http://m", session)
    assert api.show("sw-patch") is None
    assert api.create("sw-patch", {"a": 1}) == APPLYING
    assert api.action("image-update", {"action": "apply-all"}) == APPLYING
    api.delete("sw-patch", True)
    with pytest.raises(ApiError, match="answered no strategy"):
        api.action("sw-patch", {"action": "abort"})
    assert [call[:2] for call in session.calls] == [
        ("GET", "http://m/api/orchestration/sw-patch/strategy"),
        ("POST", "http://m/api/orchestration/sw-patch/strategy"),
        ("POST", "http://m/api/orchestration/image-update/strategy/actions"),
        ("DELETE", "http://m/api/orchestration/sw-patch/strategy"),
        ("POST", "http://m/api/orchestration/sw-patch/strategy/actions")]
    assert session.calls[3][2] == {"force": True}
