"""``sw-patch commit``'s confirmation with stdin closed or empty means "no"."""
from __future__ import annotations

import io
from types import SimpleNamespace

from cli import sw_patch


class FakeApi:
    """Answers the commit flow's three calls; records what was asked."""

    def __init__(self):
        self.calls = []

    def call(self, method, path, **kwargs):
        self.calls.append(path)
        if path.startswith("query_dependencies"):
            return 200, {"patches": ["A_0001"], "error": ""}
        return 200, {"info": "would free 1 MiB\n", "warning": "", "error": ""}


def _commit(monkeypatch, stdin: str) -> tuple[int, FakeApi]:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    api = FakeApi()
    args = SimpleNamespace(release=None, all=False, patches=["A_0001"], dry_run=False,
                           yes=False, format="table")
    return sw_patch.cmd_commit(api, args), api


def test_closed_stdin_aborts_the_commit(monkeypatch, capsys):
    rc, api = _commit(monkeypatch, "")
    assert rc == 1 and "The commit operation has been aborted." in capsys.readouterr().out
    assert not any(path.startswith("commit/") for path in api.calls), api.calls


def test_yes_commits(monkeypatch):
    rc, api = _commit(monkeypatch, "y\n")
    assert rc == 0 and api.calls[-1] == "commit/A_0001"
