"""The argparse tree of ``metalcast``.

A client command's parser names its handler in cli.main (``handler``); a server
command's names the command (``server_command``), which cli.main.SERVER_COMMANDS maps to
the server function that runs it. Nothing here imports the server.
"""
from __future__ import annotations

import argparse

from cli import conductors, updates

EPILOG = """environment:
  METALCAST_URL, METALCAST_USERNAME, METALCAST_PASSWORD   client connection
  METALCAST_HOST, METALCAST_PORT, METALCAST_DATA_DIR      serve defaults
  METALCAST_CONFIG                                       config file (INI)

quick start:
  metalcast demo                     deploy a virtual lab of machines, delta-update one
  metalcast serve --data-dir DIR     run the API + conductor (SQLite in DIR)
  metalcast node enroll nodes.yaml   bulk-enrol nodes and ports
"""


def _fmt(p):
    p.add_argument("--format", "-f", choices=("table", "json", "value"), default="table",
                   help="output format (default: table)")


def _service_options(p, serve: bool = False):
    p.add_argument("--data-dir", help="data directory: SQLite database, keys, boot "
                   "files (env METALCAST_DATA_DIR; default ~/.local/share/metalcast)")
    p.add_argument("--config-file", help="INI config file (env METALCAST_CONFIG; default "
                   "DATA_DIR/metalcast.conf if present)")
    if serve:
        p.add_argument("--host", help="address to listen on (env METALCAST_HOST; default "
                       "127.0.0.1; anything else requires auth_strategy = http_basic)")
        p.add_argument("--port", type=int, help="port (env METALCAST_PORT; default 6385)")
        p.add_argument("--role", choices=("all", "api", "conductor"),
                       help="all: REST API and conductor in one process (the default); "
                       "api: REST API only, work handed to the nodes' conductors through "
                       "the database; conductor: workers, periodic tasks, boot servers, "
                       "no REST API. api and conductor need a shared PostgreSQL "
                       "([database] connection)")


def _server(p, command: str, pass_through: bool = False) -> None:
    """``p`` runs server command ``command``; with ``pass_through`` the words after it
    are handed to the server function unparsed (``args.argv``): it owns their options."""
    p.set_defaults(server_command=command, pass_through=pass_through)


def _node_commands(sub, h):
    node = sub.add_parser("node", help="manage nodes").add_subparsers(metavar="COMMAND")
    p = node.add_parser("create", help="enrol one node")
    p.add_argument("--driver", required=True, help="hardware type, e.g. fake-hardware")
    p.add_argument("--name")
    p.add_argument("--resource-class")
    p.add_argument("--driver-info", action="append", metavar="KEY=VALUE")
    p.add_argument("--property", action="append", metavar="KEY=VALUE")
    _fmt(p)
    p.set_defaults(handler=h["cmd_node_create"])
    p = node.add_parser("list", help="list nodes")
    p.add_argument("--long", action="store_true", help="more columns")
    p.add_argument("--provision-state", help="only nodes in this state")
    _fmt(p)
    p.set_defaults(handler=h["cmd_node_list"])
    p = node.add_parser("show", help="show one node")
    p.add_argument("node", help="UUID or name")
    _fmt(p)
    p.set_defaults(handler=h["cmd_node_show"])
    for verb, text in (("manage", "verify the BMC and make the node manageable"),
                       ("provide", "clean the node and make it available"),
                       ("deploy", "deploy the node (set --instance-info image_source=...)"),
                       ("undeploy", "tear down the instance and clean")):
        p = node.add_parser(verb, help=text)
        p.add_argument("node", help="UUID or name")
        p.add_argument("--wait", nargs="?", type=int, const=0, metavar="SECONDS",
                       help="wait for the target state (optionally at most SECONDS)")
        if verb == "deploy":
            p.add_argument("--instance-info", action="append", metavar="KEY=VALUE")
            p.add_argument("--config-drive", help="config drive (gzip+base64 or URL)")
        p.set_defaults(handler=h["cmd_node_verb"], command=verb)
    p = node.add_parser("power", help="power a node on/off/reboot")
    p.add_argument("node", help="UUID or name")
    p.add_argument("state", choices=("on", "off", "reboot", "soft-off", "soft-reboot"))
    p.set_defaults(handler=h["cmd_node_power"])
    p = node.add_parser("delete", help="delete nodes")
    p.add_argument("nodes", nargs="+", metavar="node")
    p.set_defaults(handler=h["cmd_node_delete"])
    p = node.add_parser("enroll", help="bulk-enrol nodes and ports from a file",
                        description="FILE is YAML/JSON in the `baremetal create` format "
                        "(nodes: [{name, driver, driver_info, ports: [{address}]}]) or CSV "
                        "with a header: name,driver,bmc_address,bmc_username,bmc_password,"
                        "macs (MACs separated by spaces or ';'). Idempotent by name and MAC.")
    p.add_argument("file")
    p.add_argument("--dry-run", action="store_true", help="show what would change")
    p.add_argument("--workers", type=int, default=8, help="parallel API connections")
    _fmt(p)
    p.set_defaults(handler=h["cmd_node_enroll"])


def _port_commands(sub, h):
    port = sub.add_parser("port", help="manage ports (NIC MACs)").add_subparsers(
        metavar="COMMAND")
    p = port.add_parser("create", help="add a MAC to a node")
    p.add_argument("address", help="MAC address")
    p.add_argument("--node", required=True, help="node UUID or name")
    p.add_argument("--pxe-enabled", choices=("true", "false"))
    _fmt(p)
    p.set_defaults(handler=h["cmd_port_create"])
    p = port.add_parser("list", help="list ports")
    p.add_argument("--node", help="only ports of this node (UUID or name)")
    p.add_argument("--address", help="only the port with this MAC")
    _fmt(p)
    p.set_defaults(handler=h["cmd_port_list"])
    p = port.add_parser("delete", help="delete ports")
    p.add_argument("ports", nargs="+", metavar="port")
    p.set_defaults(handler=h["cmd_port_delete"])


def _image_commands(sub):
    image = sub.add_parser("image", help="disk images and update payloads").add_subparsers(
        metavar="COMMAND")
    p = image.add_parser("delta", help="build a signed delta payload that turns raw image "
                         "OLD into raw image NEW (applied by the agent in place)")
    p.add_argument("old", help="the raw image the hosts run now")
    p.add_argument("new", help="the raw image to update them to")
    p.add_argument("-o", "--output", help="payload file (default NEW.delta)")
    p.add_argument("--key", help="Ed25519 signing key (PEM; default "
                   "DATA_DIR/keys/delta_ed25519.key, created on first use)")
    p.add_argument("--data-dir", help="where the default key lives (env METALCAST_DATA_DIR)")
    p.add_argument("--image-version", default="", help="version text stored in the manifest")
    _fmt(p)
    _server(p, "image delta")
    p = image.add_parser("pubkey", help="print the public key agents verify payloads with")
    p.add_argument("--key", help="signing key (default DATA_DIR/keys/delta_ed25519.key)")
    p.add_argument("--data-dir", help="where the default key lives (env METALCAST_DATA_DIR)")
    _server(p, "image pubkey")
    updates.register_image(image)    # upload, list, show, delete: REST (cli/updates.py)


def _patch_commands(sub):
    # StarlingX patch_build's options (personalities, statuses) belong to the patching
    # code: conductor.cmd.patch_build parses them, and prints their --help.
    patch = sub.add_parser("patch", help="build and sign StarlingX-format patches").\
        add_subparsers(metavar="COMMAND")
    p = patch.add_parser("build", add_help=False, help="build a signed ID.patch from RPM "
                         "files (patch_build's options)")
    _server(p, "patch build", pass_through=True)
    p = patch.add_parser("keygen", add_help=False,
                         help="create an RSA-2048 patch signing key and trust it")
    _server(p, "patch keygen", pass_through=True)


def _host_commands(sub, h):
    host = sub.add_parser("host", help="host agents of active nodes (metalcast-agent "
                          "host)").add_subparsers(metavar="COMMAND")
    p = host.add_parser("token", help="issue the token of a node's host agent (revokes "
                        "the previous one; active nodes only)",
                        description="Issue a new host-agent token through the API "
                        "(node vendor passthru issue_host_agent_token) and print it as "
                        "JSON {token, node_uuid}, or write it to --output with mode 0600. "
                        "The first heartbeat with it binds it to the agent's host and TLS "
                        "certificate; issuing a new token is how an agent is rebound.")
    p.add_argument("node", help="UUID or name")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="write the token file here (mode 0600) instead of printing it")
    p.set_defaults(handler=h["cmd_host_token"])
    p = host.add_parser("revoke", help="revoke the token of a node's host agent")
    p.add_argument("node", help="UUID or name")
    p.set_defaults(handler=h["cmd_host_revoke"])


def _alarm_commands(sub, h):
    alarm = sub.add_parser("alarm", help="active alarms (patching, ...)").add_subparsers(
        metavar="COMMAND")
    p = alarm.add_parser("list", help="list active alarms")
    _fmt(p)
    p.set_defaults(handler=h["cmd_alarm_list"])


def _dns_commands(sub):
    dns = sub.add_parser("dns", help="DNS registration: removals still to be done").\
        add_subparsers(metavar="COMMAND")
    p = dns.add_parser("pending", help="list DNS records of deleted nodes that are "
                       "still to be removed (read from the database)")
    _service_options(p)
    _fmt(p)
    _server(p, "dns pending")
    p = dns.add_parser("forget", help="drop pending removals (records removed by hand)")
    p.add_argument("ids", nargs="+", type=int, metavar="id", help="id from `dns pending`")
    _service_options(p)
    _server(p, "dns forget")


def build(h: dict) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="metalcast", description="metalcast: bare-metal provisioning appliance "
        "(Ironic-compatible API).", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="API URL (env METALCAST_URL; default "
                        "http://127.0.0.1:6385)")
    parser.add_argument("--username", help="HTTP basic user (env METALCAST_USERNAME)")
    parser.add_argument("--password", help="HTTP basic password (env METALCAST_PASSWORD)")
    parser.add_argument("--debug", action="store_true", help="verbose logging")
    sub = parser.add_subparsers(metavar="COMMAND")
    p = sub.add_parser("serve", help="run the API and conductor")
    _service_options(p, serve=True)
    _server(p, "serve")
    db = sub.add_parser("db", help="database maintenance").add_subparsers(metavar="COMMAND")
    p = db.add_parser("upgrade", help="apply schema migrations")
    _service_options(p)
    _server(p, "db upgrade")
    _node_commands(sub, h)
    _port_commands(sub, h)
    _image_commands(sub)
    updates.register(sub)            # channel, group, instance, lease (cli/updates.py)
    _patch_commands(sub)
    _host_commands(sub, h)
    _alarm_commands(sub, h)
    conductors.register(sub)         # list, show: GET /v1/conductors (cli/conductors.py)
    _dns_commands(sub)
    p = sub.add_parser("demo", help="deploy a virtual lab of machines (real IPMI, iPXE, "
                                    "agent) and delta-update one")
    p.add_argument("--nodes", type=int, default=3,
                   help="how many lab machines (default 3, at most 64)")
    p.add_argument("--data-dir", help="keep state here (default: a temporary directory)")
    p.add_argument("--keep", action="store_true", help="keep serving after the demo")
    _server(p, "demo")
    return parser
