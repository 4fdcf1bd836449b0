"""``sw-patch`` prints what StarlingX 6.0.0's client prints for the same answers
(cgcs_patch/patch_client.py), from recorded answers; tests/functional/
test_sw_patch_peer.py compares the two clients against a real server."""
from __future__ import annotations

import io
import os
from types import SimpleNamespace

import pytest

from cli import sw_patch, sw_patch_api, sw_patch_flows
from cli import sw_patch_output as out
from cli.sw_patch_output import Reply

OK = {"info": "", "warning": "", "error": ""}


@pytest.fixture(autouse=True)
def no_terminal(monkeypatch):
    """As in a pipe: no terminal size, so the width is StarlingX's default 72."""
    monkeypatch.setattr("shutil.get_terminal_size", lambda fallback: os.terminal_size(fallback))


class FakeApi:
    """Answers calls from a table of path prefix -> Reply (or a list, one per call)."""

    def __init__(self, answers: dict):
        self.answers, self.calls = answers, []

    def call(self, method, path, **kwargs):
        self.calls.append((method, path, kwargs.get("params")))
        for prefix, answer in self.answers.items():
            if path.startswith(prefix):
                if isinstance(answer, list):
                    answer = answer.pop(0)
                if isinstance(answer, Exception):
                    raise answer
                return answer
        raise AssertionError(f"unexpected call {method} {path}")


def _args(**kw) -> SimpleNamespace:
    base = dict(format="table", debug=False, release=None, all=False, dry_run=False,
                yes=False, patches=[])
    return SimpleNamespace(**{**base, **kw})


def _commit_api(dry_info="This commit operation would free 0.01 MiB") -> FakeApi:
    return FakeApi({
        "query_dependencies": Reply(200, {"patches": ["A_0002", "A_0001"], "error": ""}),
        "commit_dry_run": Reply(200, dict(OK, info=dry_info)),
        "commit/": Reply(200, dict(OK, info="The patches have been committed."))})


WARNING = ("WARNING: Committing a patch is an irreversible operation. Committed\n"
           "         patches cannot be removed.\n")
LISTING = ("The following patches will be committed:\n    A_0001\n    A_0002\n\n"
           "This commit operation would free 0.01 MiB\n")


@pytest.mark.parametrize("stdin,rc,tail", [
    ("y\n", 0, "The patches have been committed.\n"),
    ("n\n", 1, "Aborting...\n"),
    ("", 1, "\nAborting...\n")])        # stdin closed: "no" (StarlingX's client crashes)
def test_commit_lists_asks_and_commits_the_ids_given(monkeypatch, capsys, stdin, rc, tail):
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    api = _commit_api()
    assert sw_patch_flows.cmd_commit(api, _args(patches=["A_0002"])) == rc
    assert capsys.readouterr().out == (LISTING + "\n" + WARNING + "\n"
                                       "Would you like to continue? [y/N]: " + tail)
    committed = [path for _, path, _ in api.calls if path.startswith("commit/")]
    assert committed == (["commit/A_0002"] if rc == 0 else [])


def test_commit_dry_run_and_yes(monkeypatch, capsys):
    assert sw_patch_flows.cmd_commit(_commit_api(), _args(patches=["A_0002"], dry_run=True)) == 0
    assert capsys.readouterr().out == LISTING
    api = _commit_api()
    assert sw_patch_flows.cmd_commit(api, _args(patches=["A_0002"], yes=True)) == 0
    assert capsys.readouterr().out.endswith("\n" + WARNING + "\nThe patches have been "
                                            "committed.\n")


def test_commit_refusals(capsys):
    refused = FakeApi({
        "query_dependencies": Reply(200, {"patches": [], "error": "NOPE is unrecognized\n"}),
        "commit_dry_run": Reply(200, dict(OK, error="NOPE is unrecognized\n"))})
    assert sw_patch_flows.cmd_commit(refused, _args(patches=["NOPE"])) == 1
    assert capsys.readouterr().out == ("The following patches will be committed:\n\n"
                                       "Error:\nNOPE is unrecognized\n\nAborting...\n")
    assert sw_patch_flows.cmd_commit(refused, _args(release="1.0")) == 1
    assert capsys.readouterr().out == "Use of --release option requires --all\n"


def test_commit_all_takes_the_running_release_of_the_server(capsys):
    pd = {"B_1": {"sw_version": "2.0"}, "A_1": {"sw_version": "1.0"}}
    api = FakeApi({"query": Reply(200, {"pd": pd}, {sw_patch_flows.RELEASE_HEADER: "1.0"}),
                   "commit_dry_run": Reply(200, dict(OK, info="would free 0.00 MiB"))})
    assert sw_patch_flows.cmd_commit(api, _args(all=True, dry_run=True)) == 0
    assert capsys.readouterr().out == ("The following patches will be committed:\n"
                                       "    A_1\n\nwould free 0.00 MiB\n")
    assert api.calls[-1][1] == "commit_dry_run/A_1"
    empty = FakeApi({"query": Reply(200, {"pd": {}})})
    assert sw_patch_flows.cmd_commit(empty, _args(all=True, release="9.9")) == 0
    assert capsys.readouterr().out == "There are no 9.9 patches to commit.\n"
    assert empty.calls == [("GET", "query", {"show": "all", "release": "9.9"})]


SHOWN = {"metadata": {
    "P_2": {"sw_version": "1.0", "patchstate": "n/a", "repostate": "Applied",
            "status": "REL", "unremovable": "", "reboot_required": "N",
            "apply_active_release_only": "Y", "summary": "Sum", "description": "a\nb",
            "install_instructions": "", "warnings": "", "requires": ["P_1"]},
    "P_1": {"sw_version": "1.0", "patchstate": "Available", "repostate": "Available",
            "status": "DEV", "unremovable": "Y", "reboot_required": "Y"}},
    "contents": {"P_1": [], "P_2": ["b-1-1.noarch.rpm", "a-1-1.noarch.rpm"]},
    "error": "X is unrecognized\n"}


def test_show_layout(monkeypatch, capsys):
    out.print_show_result(Reply(200, SHOWN))
    assert capsys.readouterr().out == (
        "P_1:\n"
        "    Release:        1.0\n"
        "    Patch State:    Available\n"
        "    Status:         DEV\n"
        "    Unremovable:    Y\n"
        "    RR:             Y\n"
        "    Contents:\n"
        "\n\n"
        "P_2:\n"
        "    Release:        1.0\n"
        "    Patch State:    n/a\n"
        "    Repo State:     Applied\n"
        "    Status:         REL\n"
        "    RR:             N\n"
        "    Apply Active Release Only: Y\n"
        "    Summary:        Sum\n"
        "    Description:    a\n"
        "                    b\n"
        "    Requires:\n"
        "                    P_1\n"
        "    Contents:\n"
        "                    a-1-1.noarch.rpm\n"
        "                    b-1-1.noarch.rpm\n"
        "\n\n"
        "Error:\nX is unrecognized\n\n")


def test_query_table_shows_the_repo_state_when_a_state_is_unknown(capsys):
    pd = {"LONGER_ID_1": {"sw_version": "1.0", "repostate": "Available",
                          "patchstate": "n/a"},
          "P_1": {"sw_version": "1.0", "repostate": "Applied", "patchstate": "n/a",
                  "reboot_required": "N"}}
    out.print_op_result(Reply(200, {"pd": pd, "info": "done\n"}))
    assert capsys.readouterr().out == (
        " Patch ID    RR  Release  Repo State  Patch State\n"
        "===========  ==  =======  ==========  ===========\n"
        "LONGER_ID_1  Y     1.0    Available       n/a    \n"
        "P_1          N     1.0     Applied        n/a    \n"
        "\n"
        "done\n\n")


def test_hosts_table(capsys):
    hosts = [{"hostname": "worker-10", "ip": "192.0.2.10", "patch_current": False,
              "interim_state": True, "patch_failed": False, "requires_reboot": True,
              "sw_version": "1.0", "state": "installing"},
             {"hostname": "c-0", "ip": "192.0.2.1", "patch_current": True,
              "patch_failed": True, "requires_reboot": False, "sw_version": "1.0",
              "state": "install-failed"}]
    out.print_hosts_result(Reply(200, {"data": hosts}))
    assert capsys.readouterr().out == (
        "Hostname   IP Address  Patch Current  Reboot Required  Release      State     \n"
        "=========  ==========  =============  ===============  =======  ==============\n"
        "c-0        192.0.2.1      Failed            No           1.0    install-failed\n"
        "worker-10  192.0.2.10     Pending           Yes          1.0      installing  \n")


def test_app_dependencies_and_debug(capsys):
    out.print_app_dependencies({"b-app": ["P_2", "P_1"], "a": ["P_3"]})
    out.print_debug(Reply(200, {"pd": {"P_1": {"b": 1, "a": [2]}}}))
    out.print_debug(Reply(500, {"error": "boom"}))
    assert capsys.readouterr().out == (
        "Application  Required Patches\n"
        "===========  ================\n"
        "a            P_3             \n"
        "b-app        P_2, P_1        \n"
        '{\n    "P_1": {\n        "a": [\n            2\n        ],\n        "b": 1\n    }\n}\n'
        f"{out.INTERNAL_ERROR}\n")


def _host(state: str, interim: bool = False) -> Reply:
    return Reply(200, {"data": [{"hostname": "c-0", "ip": "192.0.2.1", "state": state,
                                 "interim_state": interim}]})


@pytest.mark.parametrize("polls,rc,printed", [
    ([_host("installing"), _host("idle", True), _host("idle")], 0,
     "..\nInstallation was successful.\n"),
    ([_host("install-rejected")], 1, "\nInstallation rejected. Node must be locked\n"),
    ([_host("install-failed")], 1, "\nInstallation failed. Please check logs for details.\n"),
    ([_host("confused")], 1, "\nPatch agent is reporting unknown state: confused\n"),
    ([Reply(200, {"data": []})] * 5, 1, "c-0 agent has timed out.\n"),
    ([sw_patch_api.Unreachable("down")] * 5, 1, "Lost communications with the patch controller\n"),
    ([Reply(500, {"error": "boom"})], 1, out.INTERNAL_ERROR + "\n")])
def test_host_install_polls_as_starlingx(monkeypatch, capsys, polls, rc, printed):
    monkeypatch.setattr(sw_patch_flows, "POLL_INTERVAL", 0)
    api = FakeApi({"host_install_async": Reply(200, dict(OK, info="sent\n")),
                   "query_hosts": list(polls)})
    assert sw_patch_flows.cmd_host_install(api, _args(host="c-0", force=False)) == rc
    assert capsys.readouterr().out == printed


def test_silent_failures_of_starlingx_are_said_on_stderr(tmp_path, capsys):
    api = FakeApi({"query_dependencies": Reply(200, {"patches": [],
                                                     "error": "NOPE is unrecognized\n"}),
                   "show": Reply(404, {"error": "The requested URL was not found"})})
    assert sw_patch.cmd_query_dependencies(api, _args(patches=["NOPE"], recursive=False)) == 1
    assert sw_patch.cmd_show(api, _args(patches=["P"])) == 1
    missing, directory = tmp_path / "NOPE.patch", tmp_path
    assert sw_patch.cmd_upload(api, _args(patches=[str(missing), str(directory)])) == 1
    printed = capsys.readouterr()
    assert printed.out == (f"Error: {directory} is a directory. Please use upload-dir\n"
                           f"Error: File does not exist: {missing}\n")
    assert printed.err == ("Error: NOPE is unrecognized\n"
                           "Error: The requested URL was not found\n")


@pytest.mark.parametrize("columns,width", [(100, 96), (61, 57), (60, 72), (0, 72)])
def test_terminal_width_is_starlingx_s(monkeypatch, columns, width):
    """tput cols less 4 when over 60 columns, else (or no terminal) 72."""
    monkeypatch.setattr("shutil.get_terminal_size",
                        lambda fallback: os.terminal_size((columns, 24)))
    assert out.term_width() == width
