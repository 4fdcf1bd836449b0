"""``metalcast image upload|list|show|delete``, ``channel``, ``group``, ``instance`` and
``lease``: the image-update REST under ``/updates/v1/`` (api/updates/operator.py).

REST only, like every client command; ``image delta`` and ``image pubkey`` stay server
commands (conductor/cmd/image.py) beside these.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import BinaryIO

import requests

from cli import output
from cli.client import Client, ClientError, error_message
from cli.errors import InvalidInput

BASE = "/updates/v1"
CHUNK = 1 << 20
IMAGE_COLUMNS = ["version", "appid", "size", "sha256", "channels"]
CHANNEL_COLUMNS = ["name", "appid", "version", "updated_at"]
GROUP_COLUMNS = ["name", "channel", "updates_enabled", "safe_mode", "rollout_percent",
                 "max_updates_per_period", "period_interval", "halted_reason"]
INSTANCE_COLUMNS = ["machineid", "node_uuid", "group_name", "version", "status",
                    "target_version", "error_code", "last_check_at"]
LEASE_COLUMNS = ["group", "max", "holder", "expires_at"]
#: group set option -> (policy field, converter)
GROUP_FLAGS = {
    "channel": ("channel", str), "safe_mode": ("safe_mode", None),
    "max_updates_per_period": ("max_updates_per_period", int),
    "period_interval": ("period_interval", int), "update_timeout": ("update_timeout", int),
    "office_hours": ("office_hours", None), "window_start": ("window_start", str),
    "window_length": ("window_length", int), "timezone": ("timezone", str),
    "rollout_percent": ("rollout_percent", int),
}


def _client(args) -> Client:
    return Client(args.url, args.username, args.password)


def _appid(args) -> dict:
    return {"appid": args.appid} if getattr(args, "appid", None) else {}


def _print(rows: list[dict], columns: list[str], fmt: str) -> None:
    if fmt != "json":
        rows = [{k: (", ".join(v) if isinstance(v, list) else v) for k, v in row.items()}
                for row in rows]
    output.FORMATTERS[fmt](rows, columns)


# -- images -------------------------------------------------------------------------
class _Reader:
    """The image file as requests streams it (its length known: no chunked encoding),
    advancing the progress bar every :data:`CHUNK` bytes."""

    def __init__(self, stream: BinaryIO, size: int, bar: output.Progress):
        self.stream, self.size, self.bar, self.unreported = stream, size, bar, 0

    def __len__(self) -> int:
        return self.size

    def read(self, n: int = -1) -> bytes:
        data = self.stream.read(n)
        self.unreported += len(data)
        if self.unreported >= CHUNK or (not data and self.unreported):
            self.bar.advance(self.unreported)
            self.unreported = 0
        return data


def cmd_image_upload(args) -> int:
    path = Path(args.file)
    if not path.is_file():
        raise InvalidInput(f"{path} is not a file: give the raw image to upload")
    size = path.stat().st_size
    client = _client(args)
    params = {"version": args.version, **_appid(args)}
    if args.channel:
        params["channel"] = args.channel
    bar = output.Progress(size, f"upload {path.name}")
    try:
        with open(path, "rb") as stream:
            response = client.session.post(
                f"{client.url}{BASE}/images", params=params,
                data=_Reader(stream, size, bar),
                headers={"Content-Type": "application/octet-stream"},
                timeout=client.timeout)
    except requests.ConnectionError:
        raise ClientError(0, f"Cannot reach the metalcast API at {client.url}; is "
                             "`metalcast serve` running? (set --url or METALCAST_URL)"
                          ) from None
    if response.status_code != 201:
        raise ClientError(response.status_code, error_message(response))
    output.show(response.json(), args.format)
    return 0


def cmd_image_list(args) -> int:
    images = _client(args).request("GET", f"{BASE}/images", params=_appid(args))["images"]
    _print(images, IMAGE_COLUMNS, args.format)
    return 0


def cmd_image_show(args) -> int:
    output.show(_client(args).request("GET", f"{BASE}/images/{args.version}",
                                      params=_appid(args)), args.format)
    return 0


def cmd_image_delete(args) -> int:
    _client(args).request("DELETE", f"{BASE}/images/{args.version}", params=_appid(args),
                          ok=(204,))
    print(f"Image version {args.version} deleted")
    return 0


# -- channels and groups ------------------------------------------------------------
def cmd_channel_list(args) -> int:
    _print(_client(args).request("GET", f"{BASE}/channels")["channels"], CHANNEL_COLUMNS,
           args.format)
    return 0


def cmd_channel_show(args) -> int:
    output.show(_client(args).request("GET", f"{BASE}/channels/{args.name}",
                                      params=_appid(args)), args.format)
    return 0


def cmd_channel_set(args) -> int:
    output.show(_client(args).request("PUT", f"{BASE}/channels/{args.name}",
                                      body={"version": args.version},
                                      params=_appid(args)), args.format)
    return 0


def cmd_group_list(args) -> int:
    _print(_client(args).request("GET", f"{BASE}/groups")["groups"], GROUP_COLUMNS,
           args.format)
    return 0


def cmd_group_show(args) -> int:
    output.show(_client(args).request("GET", f"{BASE}/groups/{args.name}",
                                      params=_appid(args)), args.format)
    return 0


def _policy(args) -> dict:
    body: dict = {}
    for option, (field, convert) in GROUP_FLAGS.items():
        value = getattr(args, option)
        if value is not None:
            body[field] = value if convert is None else convert(value)
    if args.pause or args.resume:
        body["updates_enabled"] = bool(args.resume)
    if args.floors is not None:
        body["floors"] = [f for f in args.floors.split(",") if f]
    return body


def cmd_group_set(args) -> int:
    body = _policy(args)
    if not body:
        raise InvalidInput("say what to change, e.g. --rollout-percent 10 or --pause "
                           "(metalcast group set --help)")
    client = _client(args)
    if args.create:
        shown = client.request("POST", f"{BASE}/groups/{args.name}", body=body,
                               params=_appid(args), ok=(201,))
    else:
        shown = client.request("PUT", f"{BASE}/groups/{args.name}", body=body,
                               params=_appid(args))
    output.show(shown, args.format)
    return 0


# -- instances and leases -----------------------------------------------------------
def cmd_instance_list(args) -> int:
    params = {k: v for k, v in (("group", args.group), ("status", args.status),
                                ("version", args.version)) if v}
    _print(_client(args).request("GET", f"{BASE}/instances", params=params)["instances"],
           INSTANCE_COLUMNS, args.format)
    return 0


def cmd_instance_show(args) -> int:
    shown = _client(args).request("GET", f"{BASE}/instances/{args.ident}")
    if args.format == "json":
        output.show(shown, "json")
        return 0
    history = shown.pop("history", [])
    output.show(shown, args.format)
    _print(history, ["created_at", "status", "version", "error_code", "text"], args.format)
    return 0


def cmd_lease_status(args) -> int:
    groups = _client(args).request("GET", f"{BASE}/leases")["groups"]
    if args.format == "json":
        output.as_json(groups, [])
        return 0
    rows = []
    for group in groups:
        for held in group["holders"] or [None]:
            rows.append({"group": group["group"], "max": group["max"],
                         "holder": held["holder"] if held else "-",
                         "expires_at": held["expires_at"] if held else ""})
    _print(rows, LEASE_COLUMNS, args.format)
    return 0


def cmd_lease_release(args) -> int:
    result = _client(args).request("DELETE", f"{BASE}/leases/{args.group}/holders/"
                                   f"{args.host}")
    print(f"Reboot lease of {args.host} in group {args.group} released "
          f"({result['holders']} of {result['max']} held now)")
    return 0


def cmd_lease_set_max(args) -> int:
    if args.max < 0:
        raise InvalidInput("N must be 0 or more (0 stops every reboot of the group)")
    _client(args).request("PUT", f"{BASE}/leases/{args.group}", body={"max": args.max})
    print(f"Lease group {args.group}: at most {args.max} host(s) reboot at once")
    return 0


# -- the argparse tree --------------------------------------------------------------
def _fmt(p) -> None:
    p.add_argument("--format", "-f", choices=("table", "json", "value"), default="table",
                   help="output format (default: table)")


def _app(p) -> None:
    p.add_argument("--appid", help="Omaha application id (default: metalcast's "
                   "{7d6a52c5-...}; Flatcar's is {e96281a6-d1af-4bde-9a0a-97b76e56dc57})")


def _add(sub, name: str, help_text: str, handler, app: bool = True):
    p = sub.add_parser(name, help=help_text)
    _fmt(p)
    if app:
        _app(p)
    p.set_defaults(handler=handler)
    return p


def register_image(image) -> None:
    """upload/list/show/delete beside the server commands delta and pubkey."""
    p = _add(image, "upload", "upload an OS image to the update catalogue",
             cmd_image_upload)
    p.add_argument("file", help="the raw image (a whole root slot)")
    p.add_argument("--version", required=True, help="its version, e.g. 2.0.0")
    p.add_argument("--channel", help="point this channel (and its group) at it; a delta "
                   "from each earlier version of the channel is built in the background")
    _add(image, "list", "list catalogue images", cmd_image_list)
    p = _add(image, "show", "show one image and its deltas", cmd_image_show)
    p.add_argument("version")
    p = _add(image, "delete", "delete an image (refused while a channel points at it)",
             cmd_image_delete)
    p.add_argument("version")


def register(sub) -> None:
    channel = sub.add_parser("channel", help="update channels (each points at one "
                             "version)").add_subparsers(metavar="COMMAND")
    _add(channel, "list", "list channels", cmd_channel_list, app=False)
    _add(channel, "show", "show a channel", cmd_channel_show).add_argument("name")
    p = _add(channel, "set", "point a channel at a version", cmd_channel_set)
    p.add_argument("name")
    p.add_argument("version")
    _group_commands(sub)
    instance = sub.add_parser("instance", help="hosts that check for updates").\
        add_subparsers(metavar="COMMAND")
    p = _add(instance, "list", "list instances", cmd_instance_list, app=False)
    for option in ("group", "status", "version"):
        p.add_argument(f"--{option}")
    p = _add(instance, "show", "show an instance and its history", cmd_instance_show,
             app=False)
    p.add_argument("ident", help="machine id or node UUID")
    lease = sub.add_parser("lease", help="reboot leases (at most N hosts of a group "
                           "reboot at once)").add_subparsers(metavar="COMMAND")
    _add(lease, "status", "lease groups and holders", cmd_lease_status, app=False)
    p = lease.add_parser("release", help="release a host's lease (a host that died)")
    p.add_argument("host", help="node name or UUID")
    p.add_argument("--group", default="default")
    p.set_defaults(handler=cmd_lease_release)
    p = lease.add_parser("set-max", help="how many hosts of the group may hold a lease")
    p.add_argument("max", type=int, metavar="N")
    p.add_argument("--group", default="default")
    p.set_defaults(handler=cmd_lease_set_max)


def _group_commands(sub) -> None:
    group = sub.add_parser("group", help="update groups and their rollout policy").\
        add_subparsers(metavar="COMMAND")
    _add(group, "list", "list groups", cmd_group_list, app=False)
    _add(group, "show", "show a group", cmd_group_show).add_argument("name")
    p = _add(group, "set", "change a group's policy (or --create one)", cmd_group_set)
    p.add_argument("name")
    p.add_argument("--create", action="store_true", help="create the group (needs "
                   "--channel)")
    p.add_argument("--channel", help="the channel the group follows")
    state = p.add_mutually_exclusive_group()
    state.add_argument("--pause", action="store_true", help="stop granting updates")
    state.add_argument("--resume", action="store_true", help="grant updates again (lifts "
                       "a safe-mode halt)")
    for option in ("safe_mode", "office_hours"):
        flag = option.replace("_", "-")
        p.add_argument(f"--{flag}", dest=option, action=argparse.BooleanOptionalAction,
                       default=None)
    for option in ("max_updates_per_period", "period_interval", "update_timeout",
                   "window_length", "rollout_percent"):
        p.add_argument(f"--{option.replace('_', '-')}", dest=option, type=int,
                       metavar="N", help="seconds" if "period_i" in option or "timeout"
                       in option or "length" in option else None)
    p.add_argument("--window-start", dest="window_start", help='"Thu 04:00" or "04:00"')
    p.add_argument("--timezone", help="IANA time zone of the windows (default UTC)")
    p.add_argument("--floors", help="comma-separated mandatory intermediate versions")


__all__ = ["register", "register_image"]
