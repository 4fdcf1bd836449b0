"""``metalcast``: the one entry point of every command.

A client command is subcommand -> one handler here -> client call -> formatter; it
talks to the API and imports nothing of the server. A server command (``serve``,
``db``, ``dns``, ``image``, ``patch``, ``demo``) runs appliance code in this process:
SERVER_COMMANDS names the function that runs it, imported only when it runs.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from cli import output
from cli import parser as parser_mod
from cli.client import Client, ClientError
from cli.errors import CliError, InvalidInput, NotInstalled

#: Server commands -> "module:function" that runs them: ``function(args, output)``
#: with the parsed arguments and this package's formatters (cli.output), returning the
#: exit status. Each module renders its own domain errors ("Error: ..." on stderr,
#: exit 1); ``patch build|keygen`` parse their own options (``args.argv``).
SERVER_COMMANDS = {
    "serve": "api.server:main",
    "db upgrade": "conductor.cmd.db:upgrade",
    "dns pending": "conductor.cmd.dns_pending:cmd_dns_pending",
    "dns forget": "conductor.cmd.dns_pending:cmd_dns_forget",
    "image delta": "conductor.cmd.image:delta",
    "image pubkey": "conductor.cmd.image:pubkey",
    "patch build": "conductor.cmd.patch_build:build_command",
    "patch keygen": "conductor.cmd.patch_build:keygen_command",
    "demo": "virtlab.demo.main:main",
}
#: Top-level package of a server module -> how to install it, for when it is missing.
INSTALL_HINTS = {
    "virtlab": "the virtual lab is an extra: pip install 'metalcast[lab]' (in a source "
               "checkout, ./scripts/demo installs it and runs the demo)",
}
DEFAULT_INSTALL_HINT = "reinstall metalcast: pip install metalcast"

NODE_LIST_COLUMNS = ["uuid", "name", "instance_uuid", "power_state", "provision_state",
                     "maintenance"]
NODE_LONG_COLUMNS = NODE_LIST_COLUMNS + ["driver", "target_provision_state", "last_error",
                                         "resource_class"]
PORT_COLUMNS = ["uuid", "address", "node_uuid", "pxe_enabled"]
#: CLI power words -> API targets.
POWER = {"on": "power on", "off": "power off", "reboot": "rebooting",
         "soft-off": "soft power off", "soft-reboot": "soft rebooting"}


def _key_values(pairs: list[str] | None, option: str) -> dict:
    result = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidInput(f"{option} expects KEY=VALUE, got {pair!r}")
        result[key] = value
    return result


def _client(args) -> Client:
    return Client(args.url, args.username, args.password)


# -- node commands ------------------------------------------------------------
def cmd_node_create(args) -> int:
    body = {"driver": args.driver}
    if args.name:
        body["name"] = args.name
    if args.resource_class:
        body["resource_class"] = args.resource_class
    for option, key in (("driver_info", "driver_info"), ("property", "properties")):
        values = _key_values(getattr(args, option), "--" + option.replace("_", "-"))
        if values:
            body[key] = values
    output.show(_client(args).create_node(body), args.format)
    return 0


def cmd_node_list(args) -> int:
    nodes = _client(args).list_nodes(detail=args.long, provision_state=args.provision_state)
    columns = NODE_LONG_COLUMNS if args.long else NODE_LIST_COLUMNS
    output.FORMATTERS[args.format](nodes, columns)
    return 0


def cmd_node_show(args) -> int:
    output.show(_client(args).get_node(args.node), args.format)
    return 0


#: verb command -> (API target, the state --wait waits for)
VERB_COMMANDS = {"manage": ("manage", "manageable"), "provide": ("provide", "available"),
                 "deploy": ("active", "active"), "undeploy": ("deleted", "available")}


def cmd_node_verb(args) -> int:
    client = _client(args)
    target, expected = VERB_COMMANDS[args.command]
    extra = {}
    if args.command == "deploy":
        patch = [{"op": "add", "path": f"/instance_info/{k}", "value": v}
                 for k, v in _key_values(args.instance_info, "--instance-info").items()]
        if patch:
            client.update_node(args.node, patch)
        if args.config_drive:
            extra["configdrive"] = args.config_drive
    client.set_provision_state(args.node, target, **extra)
    if args.wait is not None:
        node = client.wait_for_state(args.node, expected, timeout=args.wait or 1800)
        print(f"Node {node['uuid']} is {node['provision_state']}")
    return 0


def cmd_node_power(args) -> int:
    _client(args).set_power_state(args.node, POWER[args.state])
    return 0


def cmd_node_delete(args) -> int:
    client, failed = _client(args), 0
    for ident in args.nodes:
        try:
            client.delete_node(ident)
            print(f"Deleted node {ident}")
        except ClientError as exc:
            print(f"Failed to delete node {ident}: {exc}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


def cmd_node_enroll(args) -> int:
    from cli import enroll  # here: YAML and the file parsers cost every command ~25 ms
    entries = enroll.load(Path(args.file))
    progress = output.Progress(len(entries), "enrolling")
    results = enroll.Enroller(lambda: _client(args), workers=args.workers).run(
        entries, dry_run=args.dry_run, progress=progress)
    rows = [vars(r) for r in results]
    output.FORMATTERS[args.format](rows, ["name", "uuid", "status", "message"])
    return 1 if any(r.status == "error" for r in results) else 0


# -- port commands ------------------------------------------------------------
def cmd_port_create(args) -> int:
    node = _client(args).get_node(args.node)["uuid"]
    body = {"address": args.address, "node_uuid": node}
    if args.pxe_enabled is not None:
        body["pxe_enabled"] = args.pxe_enabled == "true"
    output.show(_client(args).create_port(body), args.format)
    return 0


def cmd_port_list(args) -> int:
    ports = _client(args).list_ports(detail=True, node=args.node, address=args.address)
    output.FORMATTERS[args.format](ports, PORT_COLUMNS)
    return 0


def cmd_port_delete(args) -> int:
    client = _client(args)
    for port in args.ports:
        client.delete_port(port)
        print(f"Deleted port {port}")
    return 0


# -- host agent commands --------------------------------------------------------
def cmd_host_token(args) -> int:
    client = _client(args)
    if not args.output:
        issued = client.issue_host_agent_token(args.node)
        print(json.dumps({"token": issued["token"], "node_uuid": issued["node_uuid"]}))
        return 0
    # The file is opened before the token is issued: a path that cannot be written
    # fails here, before the previous token is revoked.
    with _private_file(Path(args.output)) as handle:
        issued = client.issue_host_agent_token(args.node)
        json.dump({"token": issued["token"], "node_uuid": issued["node_uuid"]}, handle)
        handle.write("\n")
    print(f"Host agent token for node {issued['node_uuid']} written to {args.output} "
          "(mode 0600); the previous token is revoked. Give the file to "
          "metalcast-agent host (--token-file).")
    return 0


@contextlib.contextmanager
def _private_file(path: Path):
    """A file written in full or not at all, readable by its owner only from the
    first byte on."""
    if path.is_dir():
        raise InvalidInput(f"{path} is a directory; give the token file's path")
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)        # an older file of that name may have had another mode
    except OSError as exc:
        raise InvalidInput(f"cannot write {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w") as handle:
            yield handle
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def cmd_host_revoke(args) -> int:
    _client(args).revoke_host_agent_token(args.node)
    print(f"Host agent token of node {args.node} revoked")
    return 0


ALARM_COLUMNS = ["uuid", "alarm_id", "reason_text", "entity_instance_id", "severity",
                 "timestamp"]


def cmd_alarm_list(args) -> int:
    alarms = _client(args).request("GET", "/fm/v1/alarms")["alarms"]
    output.FORMATTERS[args.format](alarms, ALARM_COLUMNS)
    return 0


def server_function(command: str) -> Callable[..., int]:
    """The function that runs server command ``command``, imported now.

    NotInstalled when its module (or one it needs) is missing, naming what to install.
    """
    module_name, _, function = SERVER_COMMANDS[command].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        hint = INSTALL_HINTS.get(module_name.partition(".")[0], DEFAULT_INSTALL_HINT)
        raise NotInstalled(f"`metalcast {command}` needs the module {exc.name}, which is "
                           f"not installed; {hint}") from None
    return getattr(module, function)


def build_parser() -> argparse.ArgumentParser:
    return parser_mod.build(globals())


def main(argv=None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest and not getattr(args, "pass_through", False):
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    command = getattr(args, "server_command", None)
    if command is None and not hasattr(args, "handler"):
        parser.print_help()
        return 2
    args.argv = rest
    # Client commands stay quiet unless asked; `serve` raises this to INFO.
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if command:
            return server_function(command)(args, output)
        return args.handler(args)
    except CliError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
