"""The client's own errors: what a command says when it cannot go on.

``str()`` of each is the sentence the user reads after ``Error:``; the entry point
(cli.main) prints it on stderr and exits 1. The client never sees the appliance's
error classes: the server's message reaches it inside the API's error body.
"""
from __future__ import annotations


class CliError(Exception):
    """Base of every error a ``metalcast`` client command reports on purpose."""


class InvalidInput(CliError):
    """A flag value or an input file the command cannot use."""


class NotInstalled(CliError):
    """A server command whose code is not installed here (the lab without its extra)."""
