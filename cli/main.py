"""``metalcast``: subcommand -> one handler -> client call -> formatter."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from conductor import config as config_mod
from conductor import errors
from cli import output
from cli.client import Client, ClientError

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
            raise errors.InvalidParameter(f"{option} expects KEY=VALUE, got {pair!r}")
        result[key] = value
    return result


def _client(args) -> Client:
    return Client(args.url, args.username, args.password)


# -- service commands ---------------------------------------------------------
def _settings(args) -> config_mod.Settings:
    overrides = {"data_dir": args.data_dir, "api_host": getattr(args, "host", None),
                 "api_port": getattr(args, "port", None)}
    return config_mod.load(args.config_file, overrides)


def cmd_serve(args) -> int:
    from api import server
    settings = _settings(args)
    server.run(settings, on_ready=lambda msg: print(msg, flush=True))
    return 0


def cmd_db_upgrade(args) -> int:
    from conductor.db import migrate
    from conductor.db.engine import make_engine
    settings = _settings(args)
    engine = make_engine(settings.db_url)
    migrate.upgrade(engine)
    print(f"Database at revision {migrate.current(engine)} (head {migrate.head()})")
    return 0


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
    from cli import enroll
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


def cmd_demo(args) -> int:
    from virtlab.demo import main as demo
    return demo.run(nodes=args.nodes, data_dir=args.data_dir, keep=args.keep)


def cmd_image_delta(args) -> int:
    from conductor.cmd import image
    return image.delta(args)


def cmd_image_pubkey(args) -> int:
    from conductor.cmd import image
    return image.pubkey(args)


def cmd_patch_build(args) -> int:
    from conductor.cmd import patch_build
    return patch_build.run_build(args)


def cmd_patch_keygen(args) -> int:
    from conductor.cmd import patch_build
    return patch_build.run_keygen(args)


ALARM_COLUMNS = ["uuid", "alarm_id", "reason_text", "entity_instance_id", "severity",
                 "timestamp"]


def cmd_alarm_list(args) -> int:
    alarms = _client(args).request("GET", "/fm/v1/alarms")["alarms"]
    output.FORMATTERS[args.format](alarms, ALARM_COLUMNS)
    return 0


def cmd_dns_pending(args) -> int:
    from conductor.cmd import dns_pending
    return dns_pending.cmd_dns_pending(args)


def cmd_dns_forget(args) -> int:
    from conductor.cmd import dns_pending
    return dns_pending.cmd_dns_forget(args)


def build_parser() -> argparse.ArgumentParser:
    from cli import parser as parser_mod
    return parser_mod.build(globals())


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return 2
    # The service logs what it does (one line per event, with the node UUID);
    # client commands stay quiet unless asked.
    quiet = logging.INFO if args.handler is cmd_serve else logging.WARNING
    logging.basicConfig(level=logging.DEBUG if args.debug else quiet,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.handler(args)
    except (ClientError, errors.MetalcastError) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
