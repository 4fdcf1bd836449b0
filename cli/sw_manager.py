"""``sw-manager``: StarlingX's orchestration CLI, against metalcast's orchestration
API (``/api/orchestration/sw-patch/strategy``, served by ``metalcast serve``).

``sw-manager patch-strategy create|delete|apply|abort|show``: the options, their
defaults (the first choice of each list) and what is printed on stdout are StarlingX
6.0.0's nfv-client, line for line (sw_manager_output.py; specs/starlingx-patching.md
§6.1, and tests/functional/test_sw_manager.py runs StarlingX's own client and this
one against one server). It differs on purpose where StarlingX's is unhelpful:

* it finds the API like the other metalcast clients (``--url`` / METALCAST_URL with
  METALCAST_USERNAME / METALCAST_PASSWORD), or like StarlingX's from an openrc
  (``--os-*`` / OS_*: Identity v3 login, catalog entry ``vim``, type ``nfv``), with
  defaults for the region, interface and domains StarlingX's insists on;
* a failure is explained on stderr with the server's message (a 409 names the
  strategy that exists) and what to do next; StarlingX's prints "Operation failed:
  conflict detected" or a traceback-like dump on stdout. Both exit 1;
* a 404 on ``show`` is an error (no orchestration API at that URL), not "No strategy
  available" (none is a 200 with a null strategy);
* ``abort`` without ``--stage-id`` sends ``abort`` (StarlingX's sends ``abort-stage``
  with a null stage, which the VIM reads as the same);
* ``--format json`` prints the API's strategy; ``show --watch`` re-renders until the
  strategy reaches a final state (exit 0 when it is ready-to-apply or applied, 1
  otherwise; Ctrl-C exits 130 without a traceback).

``sw-manager image-strategy …`` is metalcast's own family, the same commands on the
rolling re-image strategy (``/api/orchestration/image-update/strategy``): create takes
the image, its checksum, an optional delta, the worker apply type and max-parallel.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from cli import sw_manager_output as out
from cli.errors import CliError
from cli.sw_manager_api import ApiError, OrchestrationApi, Unreachable, connect

#: create option -> its choices, the first being the default (StarlingX's lists)
PATCH_CHOICES: dict[str, tuple[str, ...]] = {
    "controller-apply-type": ("serial", "ignore"),
    "storage-apply-type": ("serial", "parallel", "ignore"),
    "worker-apply-type": ("serial", "parallel", "ignore"),
    "instance-action": ("stop-start", "migrate"),
    "alarm-restrictions": ("strict", "relaxed"),
}
IMAGE_CHOICES: dict[str, tuple[str, ...]] = {
    "worker-apply-type": ("serial", "parallel"),
    "alarm-restrictions": ("strict", "relaxed"),
}
MAX_PARALLEL = (2, 100)
EXAMPLE = """\
a rolling patch of the fleet, workers two at a time:
  sw-patch upload P_0001.patch && sw-patch apply P_0001
  sw-manager patch-strategy create --worker-apply-type parallel \\
      --max-parallel-worker-hosts 2
  sw-manager patch-strategy apply
  sw-manager patch-strategy show --watch      # or show --details / --active
  sw-manager patch-strategy delete
"""
#: what each failed call's status means for the operator, after the server's message
NEXT_STEP = {
    ("create", 409): "delete it first: sw-manager {family} delete "
                     "(--force while it is building, applying or aborting)",
    ("apply", 404): "create one first: sw-manager {family} create",
    ("abort", 404): "there is nothing to abort",
    ("delete", 404): "there is nothing to delete",
    ("delete", 409): "abort it first (sw-manager {family} abort), or delete --force",
}


def _max_parallel(text: str) -> int:
    low, high = MAX_PARALLEL
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number from {low} to {high}, "
                                         f"got {text!r}") from None
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"expected a number from {low} to {high}, "
                                         f"got {value}")
    return value


def _stage_id(text: str) -> int:
    if not (text.isascii() and text.isdigit() and len(text) <= 6):
        raise argparse.ArgumentTypeError(f"expected a stage number (0, 1, ...), got {text!r}")
    return int(text)


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError("expected seconds between two looks, above 0 and "
                                         f"at most 3600, got {text!r}")
    return value


# -- commands -----------------------------------------------------------------------
def _text(args, strategy: dict) -> str:
    """The strategy as ``--format`` says: StarlingX's layout, or the API's JSON."""
    if args.format == "json":
        return json.dumps({"strategy": strategy}, indent=2)
    return "\n".join(out.render(out.parse(strategy), args.details, args.active))


def _emit(args, strategy: dict) -> None:
    print(_text(args, strategy))


def patch_body(args) -> dict:
    """StarlingX's create body (nfv-client's keys, swift always ignore)."""
    body = {"controller-apply-type": args.controller_apply_type,
            "swift-apply-type": "ignore",
            "default-instance-action": args.instance_action,
            "storage-apply-type": args.storage_apply_type,
            "worker-apply-type": args.worker_apply_type,
            "alarm-restrictions": args.alarm_restrictions}
    if args.max_parallel_worker_hosts is not None:
        body["max-parallel-worker-hosts"] = args.max_parallel_worker_hosts
    return body


def image_body(args) -> dict:
    body = {"image": args.image, "image-checksum": args.image_checksum,
            "worker-apply-type": args.worker_apply_type,
            "alarm-restrictions": args.alarm_restrictions}
    for key in ("delta_url", "delta_version", "max_parallel_worker_hosts"):
        if getattr(args, key) is not None:
            body[key.replace("_", "-")] = getattr(args, key)
    return body


def cmd_create(api: OrchestrationApi, args) -> int:
    _emit(args, api.create(args.kind, args.body(args)))
    return 0


def cmd_delete(api: OrchestrationApi, args) -> int:
    api.delete(args.kind, args.force)
    print("Strategy deleted")
    return 0


def _act(api: OrchestrationApi, args, whole: str, stage: str) -> int:
    """``whole`` (e.g. apply-all), or ``stage`` with --stage-id."""
    body: dict = {"action": whole} if args.stage_id is None else \
        {"action": stage, "stage-id": args.stage_id}
    _emit(args, api.action(args.kind, body))
    return 0


def cmd_apply(api: OrchestrationApi, args) -> int:
    return _act(api, args, "apply-all", "apply-stage")


def cmd_abort(api: OrchestrationApi, args) -> int:
    return _act(api, args, "abort", "abort-stage")


def cmd_show(api: OrchestrationApi, args) -> int:
    if args.watch:
        return watch(api, args)
    strategy = api.show(args.kind)
    if strategy is None:
        print("No strategy available")
        return 0
    _emit(args, strategy)
    return 0


def watch(api: OrchestrationApi, args) -> int:
    """Show the strategy again every ``--interval`` seconds while it changes, until it
    reaches a final state; on a terminal, in place. Survives a server restart."""
    tty, shown, unreachable = sys.stdout.isatty(), None, False
    while True:
        try:
            strategy = api.show(args.kind)
        except Unreachable as exc:
            if not unreachable:
                print(f"{exc}; retrying every {args.interval:g} s", file=sys.stderr)
            unreachable = True
            time.sleep(args.interval)
            continue
        unreachable = False
        if strategy is None:
            print("No strategy available")
            return 0 if shown is None else 1
        text = _text(args, strategy)
        if text != shown:
            print(("\x1b[H\x1b[J" if tty else "" if shown is None else "\n") + text,
                  flush=True)
            shown = text
        if strategy.get("state") in out.FINAL_STATES:
            return 0 if strategy["state"] in out.SUCCESS_STATES else 1
        time.sleep(args.interval)


# -- parser -------------------------------------------------------------------------
def _connection_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "where the API is", "--url (or METALCAST_URL) with HTTP basic credentials, or an "
        "openrc: --os-auth-url (or OS_AUTH_URL) and the other --os-* options (or OS_*), "
        "as StarlingX's client")
    group.add_argument("--url", help="API URL (env METALCAST_URL; default "
                       "http://127.0.0.1:6385)")
    group.add_argument("--username", help="HTTP basic user (env METALCAST_USERNAME)")
    group.add_argument("--password", help="HTTP basic password (env METALCAST_PASSWORD)")
    for name, default in (("auth-url", None), ("username", None), ("password", None),
                          ("project-name", "admin"), ("project-domain-name", "Default"),
                          ("user-domain-name", "Default"), ("region-name", "any region"),
                          ("interface", "public")):
        env = "OS_" + name.replace("-", "_").upper()
        group.add_argument(f"--os-{name}", metavar=name.split("-")[-1].upper(),
                           help=f"env {env}" + (f"; default {default}" if default else ""))
    group.add_argument("--debug", action="store_true",
                       help="print each request and its answer on stderr")


def _display_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--format", choices=("table", "json"), default="table",
                        help="table (StarlingX's layout, the default) or json (the "
                             "API's strategy)")
    common.set_defaults(details=False, active=False, watch=False)
    return common


def _choices(p: argparse.ArgumentParser, choices: dict[str, tuple[str, ...]]) -> None:
    for option, values in choices.items():
        p.add_argument(f"--{option}", default=values[0], choices=values,
                       help=f"defaults to {values[0]}")
    p.add_argument("--max-parallel-worker-hosts", type=_max_parallel, metavar="N",
                   help="maximum worker hosts to update in parallel "
                        f"({MAX_PARALLEL[0]}..{MAX_PARALLEL[1]}; the server's default: 2)")


def _patch_create(p: argparse.ArgumentParser) -> None:
    _choices(p, PATCH_CHOICES)
    p.set_defaults(body=patch_body)


def _image_create(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image", required=True, metavar="URL",
                   help="the image every active host is rebuilt with")
    p.add_argument("--image-checksum", required=True, metavar="ALGO:HEX",
                   help="its checksum, e.g. sha256:<64 hex digits>")
    p.add_argument("--delta-url", metavar="URL",
                   help="a signed delta from the hosts' image to this one (written "
                        "instead of the whole image where a host can take it)")
    p.add_argument("--delta-version", metavar="VERSION", help="the version the delta makes")
    _choices(p, IMAGE_CHOICES)
    p.set_defaults(body=image_body)


#: sub-command family -> (strategy name in the API, title, what create takes)
FAMILIES = {
    "patch-strategy": ("sw-patch", "Patch Strategy", _patch_create),
    "image-strategy": ("image-update", "Image Update Strategy (metalcast: rolling "
                       "re-image of the active hosts through the ramdisk)", _image_create),
}


def _family_parser(commands, family: str) -> None:
    kind, title, create_options = FAMILIES[family]
    parser = commands.add_parser(family, help=title)
    parser.set_defaults(kind=kind, family=family)
    sub = parser.add_subparsers(title=f"{title.split(' (')[0]} Commands", metavar="COMMAND",
                                required=True)
    common = _display_options()
    p = sub.add_parser("create", parents=[common], help="Create a strategy")
    create_options(p)
    p.set_defaults(handler=cmd_create)
    p = sub.add_parser("delete", help="Delete a strategy")
    p.add_argument("--force", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(handler=cmd_delete)
    for name, handler, verb in (("apply", cmd_apply, "Apply"), ("abort", cmd_abort, "Abort")):
        p = sub.add_parser(name, parents=[common], help=f"{verb} a strategy")
        p.add_argument("--stage-id", type=_stage_id, metavar="N",
                       help=f"stage identifier to {name} (default: all stages)")
        p.set_defaults(handler=handler)
    p = sub.add_parser("show", parents=[common], help="Show a strategy")
    p.add_argument("--details", action="store_true", help="show strategy details")
    p.add_argument("--active", action="store_true",
                   help="show currently active strategy step")
    p.add_argument("--watch", action="store_true",
                   help="show it again as it advances, until it reaches a final state "
                        "(exit 0 when ready-to-apply or applied, else 1)")
    p.add_argument("--interval", type=_interval, default=2.0, metavar="SECONDS",
                   help="with --watch: seconds between two looks (default 2)")
    p.set_defaults(handler=cmd_show)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sw-manager", description="Orchestrate updates across the fleet: create, "
        "apply, abort, show and delete a strategy on a metalcast conductor (StarlingX "
        "sw-manager compatible).", epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _connection_options(parser)
    commands = parser.add_subparsers(title="Commands", metavar="COMMAND", required=True)
    for family in FAMILIES:
        _family_parser(commands, family)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(connect(args), args)
    except ApiError as exc:
        hint = NEXT_STEP.get((args.handler.__name__[4:], exc.status), "")
        print(f"Error: {out.printable(exc)}"
              + (f"\n{hint.format(family=args.family)}" if hint else ""), file=sys.stderr)
        return 1
    except CliError as exc:
        print(f"Error: {out.printable(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
