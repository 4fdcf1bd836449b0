"""The ``metalcast`` entry point: client commands never load the server; server
commands are found through SERVER_COMMANDS, and a missing one says what to install."""
from __future__ import annotations

import argparse
import pkgutil
import sys

import pytest

import cli
from cli import main as entry

SERVER_PACKAGES = ("conductor", "api", "virtlab")
CLI_MODULES = sorted(f"cli.{m.name}" for m in pkgutil.iter_modules(cli.__path__))


def _server_commands(parser: argparse.ArgumentParser) -> set[str]:
    """Every ``server_command`` the argparse tree sets, at any depth."""
    found = {parser.get_default("server_command")} - {None}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found |= _server_commands(sub)
    return found


def test_the_table_names_every_server_command_and_each_resolves():
    assert _server_commands(entry.build_parser()) == set(entry.SERVER_COMMANDS)
    for command in entry.SERVER_COMMANDS:
        assert callable(entry.server_function(command)), command


def test_demo_without_the_lab_names_what_to_install(monkeypatch, capsys):
    for name in ("virtlab", "virtlab.demo", "virtlab.demo.main"):
        monkeypatch.setitem(sys.modules, name, None)   # import fails as if not installed
    assert entry.main(["demo"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Error: `metalcast demo` needs the module virtlab")
    assert "pip install 'metalcast[lab]'" in err and "./scripts/demo" in err


def test_a_missing_server_module_is_reported_not_raised(monkeypatch, capsys):
    monkeypatch.setitem(entry.SERVER_COMMANDS, "db upgrade", "conductor.no_such_cmd:upgrade")
    assert entry.main(["db", "upgrade"]) == 1
    err = capsys.readouterr().err
    assert "needs the module conductor.no_such_cmd" in err and "pip install metalcast" in err


def test_patch_build_options_pass_through_to_the_patching_code(capsys):
    with pytest.raises(SystemExit) as exit_:
        entry.main(["patch", "build", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: metalcast patch build") and "--controller" in out
    with pytest.raises(SystemExit) as exit_:
        entry.main(["patch", "build", "--release", "1.0"])
    assert exit_.value.code == 2 and "required: --id" in capsys.readouterr().err


def test_unknown_options_of_other_commands_are_still_refused(capsys):
    with pytest.raises(SystemExit) as exit_:
        entry.main(["node", "list", "--bogus"])
    assert exit_.value.code == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err

