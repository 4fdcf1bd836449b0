"""The ``metalcast`` client in a fresh interpreter: importing every cli module loads
none of the server packages (the entry point's logic: tests/unit/cli/test_entry_point.py)."""
from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import cli

SERVER_PACKAGES = ("conductor", "api", "virtlab")
CLI_MODULES = sorted(f"cli.{m.name}" for m in pkgutil.iter_modules(cli.__path__))


def test_every_cli_module_imports_without_the_server():
    # A fresh interpreter: this test process has long imported the server.
    code = (f"import {', '.join(CLI_MODULES)}; import sys; "
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {SERVER_PACKAGES}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=Path(__file__).parents[2], check=True)
    assert "cli.main" in CLI_MODULES and "cli.enroll" in CLI_MODULES
    assert done.stdout.strip() == "[]", done.stdout
