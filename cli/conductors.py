"""``metalcast conductor list|show``: Ironic's ``GET /v1/conductors`` (API 1.49).

REST only, like every client command: the live conductors, their groups and the
hardware types they serve, as ``baremetal conductor list|show`` shows them.
"""
from __future__ import annotations

import argparse
from urllib.parse import parse_qs, quote, urlsplit

from cli import output
from cli.client import Client

COLUMNS = ["hostname", "conductor_group", "alive"]
LONG_COLUMNS = COLUMNS + ["drivers", "created_at", "updated_at"]
#: Pages followed at most (1000 conductors each): a server that keeps answering
#: ``next`` cannot keep the client looping.
MAX_PAGES = 100


def _client(args) -> Client:
    return Client(args.url, args.username, args.password)


def _cells(rows: list[dict], fmt: str) -> list[dict]:
    if fmt == "json":
        return rows
    return [{k: (", ".join(v) if isinstance(v, list) else v) for k, v in row.items()}
            for row in rows]


def cmd_conductor_list(args) -> int:
    client = _client(args)
    params: dict[str, str] = {"detail": "true"} if args.long else {}
    found: list[dict] = []
    for _ in range(MAX_PAGES):
        body = client.request("GET", "/v1/conductors", params=params)
        found += body.get("conductors", [])
        marker = parse_qs(urlsplit(body.get("next", "")).query).get("marker")
        if not marker:
            break
        params = dict(params, marker=marker[0])
    if args.group is not None:
        found = [c for c in found if c.get("conductor_group") == args.group]
    output.FORMATTERS[args.format](_cells(found, args.format),
                                   LONG_COLUMNS if args.long else COLUMNS)
    return 0


def cmd_conductor_show(args) -> int:
    body = _client(args).request("GET", f"/v1/conductors/{quote(args.hostname, safe='')}")
    output.show(body if args.format == "json" else _cells([body], args.format)[0],
                args.format)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    conductor = sub.add_parser("conductor", help="conductors: alive, group, hardware "
                               "types").add_subparsers(metavar="COMMAND")
    p = conductor.add_parser("list", help="list conductors (GET /v1/conductors)")
    p.add_argument("--long", action="store_true",
                   help="also the hardware types and the last heartbeat")
    p.add_argument("--group", help="only this conductor group ('' for the default)")
    p.add_argument("--format", "-f", choices=("table", "json", "value"), default="table",
                   help="output format (default: table)")
    p.set_defaults(handler=cmd_conductor_list)
    p = conductor.add_parser("show", help="one conductor")
    p.add_argument("hostname", help="the conductor's name ([DEFAULT] host)")
    p.add_argument("--format", "-f", choices=("table", "json", "value"), default="table",
                   help="output format (default: table)")
    p.set_defaults(handler=cmd_conductor_show)
