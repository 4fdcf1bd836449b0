"""How ``sw-patch`` calls metalcast's patch API (``/patch/<operation>``) and shows the
answer: the one place requests are made, their answers normalised into a Reply, and
the choice between StarlingX's printer, ``--debug`` and ``--format json``."""
from __future__ import annotations

import json

import requests

from cli import sw_patch_output as out
from cli.client import Client, error_message
from cli.sw_patch_output import Reply


class Unreachable(Exception):
    """The API did not answer (no connection)."""


class Api:
    """Raw calls to the patch API; sw-patch judges results by their ``error`` text."""

    def __init__(self, args):
        self.client = Client(args.url, args.username, args.password, retries=0)

    def call(self, method: str, path: str, **kwargs) -> Reply:
        url = f"{self.client.url}/patch/{path}"
        try:
            response = self.client.session.request(method, url, timeout=600, **kwargs)
        except requests.ConnectionError:
            raise Unreachable(f"Failed to connect to the patch API at {self.client.url}: "
                              "is `metalcast serve` running? (set --url or METALCAST_URL)"
                              ) from None
        if response.status_code == 401:
            raise SystemExit("Authentication failed: set METALCAST_USERNAME and "
                             "METALCAST_PASSWORD")
        try:
            data = response.json()
        except ValueError:
            data = {"error": response.text or response.reason}
        if response.status_code != 200 and not (isinstance(data, dict) and data.get("error")):
            data = {"error": error_message(response)}   # Ironic's error body: its message
        return Reply(response.status_code, data, response.headers)


def emit(args, reply: Reply, printer=out.print_op_result) -> int:
    if args.format == "json":
        print(json.dumps(reply.data, indent=2, sort_keys=True))
    elif args.debug:
        out.print_debug(reply)
    else:
        printer(reply)
    out.explain(reply)
    return reply.rc


def join_ids(ids: list[str]) -> str:
    return "/".join(ids)
