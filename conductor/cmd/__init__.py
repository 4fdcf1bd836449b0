"""Server-side ``metalcast`` commands: each runs appliance code in this process.

The one ``metalcast`` entry point parses the command line and calls these by name
(``cli.main.SERVER_COMMANDS``), importing a module only when its command runs, as
``function(args, output)``: ``args`` is the parsed command line and ``output`` the
entry point's formatters (the ``cli.output`` module: ``FORMATTERS``, ``show``,
``Progress``), handed in because the conductor never imports the client. The
appliance's errors are rendered here, on the server side, so the client package never
needs to know them.
"""
from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

from conductor import config as config_mod
from conductor import errors


def command(func: Callable[..., int]) -> Callable[..., int]:
    """Wrap a command function: a domain error becomes ``Error: ...`` on stderr and
    exit status 1, as for every ``metalcast`` command."""
    @functools.wraps(func)
    def run(*args: Any, **kwargs: Any) -> int:
        try:
            return func(*args, **kwargs)
        except errors.MetalcastError as exc:
            print(f"Error: {exc}", file=sys.stderr)
            return 1
    return run


def load_settings(args: Any, **flags: Any) -> config_mod.Settings:
    """The settings for ``--config-file``/``--data-dir`` plus ``flags`` (``section.key``
    names, None for an option not given on the command line)."""
    return config_mod.load(args.config_file, {"data_dir": args.data_dir, **flags})
