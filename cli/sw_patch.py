"""``sw-patch``: StarlingX's patching CLI, against metalcast's patch API (``/patch/``).

Sub-commands, what they print and how they exit are StarlingX 6.0.0's sw-patch, line
for line on stdout (specs/starlingx-patching.md §3.1; tests/functional/
test_sw_patch_peer.py runs StarlingX's own client and this one against one server).
It differs on purpose where StarlingX's is silent or wrong, never on stdout:

* it talks to the metalcast API (``--url`` or METALCAST_URL, METALCAST_USERNAME /
  METALCAST_PASSWORD), not to 127.0.0.1:5487 as root: the server checks who asks;
* a call that fails with an HTTP error is explained on stderr (StarlingX's client
  prints nothing, or crashes in ``--debug`` and host-install), as is the error of
  query-dependencies (StarlingX's prints only the patch list);
* it exits 1 after a failure where StarlingX's exits 0: what-requires and
  query-dependencies (as root it never sets their exit code), an upload of a file
  that is missing or a directory;
* ``--format json`` prints the API's JSON; ``commit --yes`` does not ask; an empty
  stdin answers "no" to commit's question (StarlingX's client crashes).

Here: the one-call commands, the parser and ``main``; the calls are in sw_patch_api.py,
what is printed in sw_patch_output.py, host-install and commit in sw_patch_flows.py.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from cli import sw_patch_output as out
from cli.sw_patch_api import Api, Unreachable, emit, join_ids
from cli.sw_patch_flows import cmd_commit, cmd_host_install
from cli.sw_patch_output import INTERNAL_ERROR, Reply


# -- commands -----------------------------------------------------------------------
def cmd_upload(api, args) -> int:
    rc = 0
    for path in sorted(set(args.patches)):
        if os.path.isdir(path):
            print(f"Error: {path} is a directory. Please use upload-dir")
            rc = 1
            continue
        if not os.path.isfile(path):
            print(f"Error: File does not exist: {path}")
            rc = 1
            continue
        with open(path, "rb") as stream:
            reply = api.call("POST", "upload",
                             files={"file": (os.path.basename(path), stream)})
        rc = emit(args, reply) or rc
    return rc


def cmd_upload_dir(api, args) -> int:
    params = {f"dir{i}": os.path.abspath(d) for i, d in enumerate(sorted(set(args.dirs)))}
    return emit(args, api.call("POST", "upload_dir", params=params))


def cmd_apply(api, args) -> int:
    ids = (["--all"] if args.all else []) + args.patches
    if not ids:
        print("sw-patch apply: give the patch IDs, or --all", file=sys.stderr)
        return 1
    params = {"skip-semantic": "yes"} if args.skip_semantic else {}
    return emit(args, api.call("POST", f"apply/{join_ids(ids)}", params=params))


def cmd_remove(api, args) -> int:
    params = {key: "yes" for key, on in (("removeunremovable", args.removeunremovable),
                                         ("skipappcheck", args.skipappcheck),
                                         ("skip-semantic", args.skip_semantic)) if on}
    return emit(args, api.call("POST", f"remove/{join_ids(args.patches)}", params=params))


def cmd_simple(method: str, path: str):
    def run(api, args) -> int:
        return emit(args, api.call(method, f"{path}/{join_ids(args.patches)}"))
    return run


def cmd_query(api, args) -> int:
    params = {"show": args.state}
    if args.release:
        params["release"] = args.release
    return emit(args, api.call("GET", "query", params=params))


def cmd_show(api, args) -> int:
    return emit(args, api.call("POST", f"show/{join_ids(args.patches)}"),
                 printer=out.print_show_result)


def cmd_query_hosts(api, args) -> int:
    return emit(args, api.call("GET", "query_hosts"), printer=out.print_hosts_result)


def cmd_query_dependencies(api, args) -> int:
    params = {"recursive": "yes"} if args.recursive else {}
    reply = api.call("GET", f"query_dependencies/{join_ids(args.patches)}", params=params)

    def printer(reply: Reply) -> None:
        if reply.status == 200:
            for pid in sorted(reply.data.get("patches", [])):
                print(pid)
            if reply.error:   # StarlingX's client never shows it
                print(f"Error: {reply.error}", end="" if reply.error.endswith("\n")
                      else "\n", file=sys.stderr)
        elif reply.status == 500:
            print(INTERNAL_ERROR)
    return emit(args, reply, printer)


def cmd_is_state(path: str):
    """is-applied / is-available: prints the answer (True/False); 0 only for True."""
    def run(api, args) -> int:
        reply = api.call("POST", f"{path}/{join_ids(args.patches)}")
        if reply.status == 200:
            print(json.dumps(reply.data) if args.format == "json" else reply.data)
        elif reply.status == 500:
            print(INTERNAL_ERROR)
        out.explain(reply)
        return 0 if reply.status == 200 and reply.data is True else 1
    return run


def cmd_report_app_dependencies(api, args) -> int:
    reply = api.call("POST", f"report_app_dependencies/{join_ids(args.patches)}",
                     params={"app": args.app})
    if reply.status == 200 and reply.data is True:
        return 0
    print(f"Error: {reply.error or reply.data}", file=sys.stderr)
    return 1


def cmd_query_app_dependencies(api, args) -> int:
    reply = api.call("POST", "query_app_dependencies")
    if args.format == "json":
        print(json.dumps(reply.data, indent=2, sort_keys=True))
    elif reply.status == 200:
        out.print_app_dependencies(reply.data)
    else:
        print(INTERNAL_ERROR)   # StarlingX's client, whatever the status
    out.explain(reply)
    return 0 if reply.status == 200 else 1


def cmd_host_install_async(api, args) -> int:
    path = f"host_install_async/{args.host}" + ("/force" if args.force else "")
    return emit(args, api.call("POST", path))


def cmd_drop_host(api, args) -> int:
    return emit(args, api.call("POST", f"drop_host/{args.host}"))


def cmd_release(path: str):
    """init-release / del-release."""
    def run(api, args) -> int:
        if args.release in (".", "..") or "/" in args.release:
            print(f"Error: Invalid release: {args.release!r}")
            return 1
        return emit(args, api.call("POST", f"{path}/{args.release}"))
    return run


def cmd_install_local(api, args) -> int:
    """StarlingX installs here before the controller is configured; metalcast has no such
    phase (hosts get their patches from the deploy ramdisk or their host agent)."""
    print("Error: install-local is not supported: metalcast has no pre-configuration "
          "phase.\nA host deployed while patches are applied gets them from the deploy "
          "ramdisk; on an installed host use `sw-patch host-install <host>` or run "
          "`metalcast-agent host --install` on it.")
    return 1


def cmd_completion(api, args) -> int:
    """Patch IDs on one line, or one hostname per line, in the server's order."""
    if args.what == "patches":
        reply = api.call("GET", "query")
        if reply.status == 200 and "pd" in reply.data:
            print(" ".join(reply.data["pd"]))
    else:
        reply = api.call("GET", "query_hosts")
        if reply.status == 200 and "data" in reply.data:
            for host in reply.data["data"]:
                print(host["hostname"])
    return 0


def _with_ids(sub, name: str, handler, help_text: str, nargs: str = "+"):
    p = sub.add_parser(name, help=help_text)
    p.add_argument("patches", nargs=nargs, metavar="PATCH_ID")
    p.set_defaults(handler=handler)
    return p


def _host_commands(sub) -> None:
    for name, handler in (("host-install", cmd_host_install),
                          ("host-install-async", cmd_host_install_async)):
        p = sub.add_parser(name, help="install pending patches on a host" +
                           ("" if handler is cmd_host_install else " (do not wait)"))
        p.add_argument("--force", action="store_true", help="install on an unlocked host")
        p.add_argument("host", help="hostname or IP address")
        p.set_defaults(handler=handler)
    p = sub.add_parser("drop-host", help="forget a host")
    p.add_argument("host")
    p.set_defaults(handler=cmd_drop_host)


def _release_commands(sub) -> None:
    for name, path, what in (
            ("init-release", "init_release", "create the empty update repo of"),
            ("del-release", "del_release", "delete the patches and update repo of")):
        p = sub.add_parser(name, help=f"{what} a release that is not running")
        p.add_argument("release")
        p.set_defaults(handler=cmd_release(path))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sw-patch", description="Manage StarlingX-format patches on a metalcast "
        "conductor (sw-patch compatible).")
    parser.add_argument("--url", help="API URL (env METALCAST_URL)")
    parser.add_argument("--username", help="HTTP basic user (env METALCAST_USERNAME)")
    parser.add_argument("--password", help="HTTP basic password (env METALCAST_PASSWORD)")
    parser.add_argument("--debug", action="store_true", help="print the replies' JSON")
    parser.add_argument("--format", choices=("table", "json"), default="table",
                        help="output format (default: sw-patch's tables)")
    sub = parser.add_subparsers(metavar="COMMAND")
    # --format and --debug are accepted after the sub-command too (sw-patch query --debug).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--format", choices=("table", "json"), default=argparse.SUPPRESS,
                        help="output format (default: sw-patch's tables)")
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="print the replies' JSON")
    add_parser = sub.add_parser
    sub.add_parser = (  # type: ignore[method-assign]
        lambda *a, **kw: add_parser(*a, parents=[common], **kw))
    p = sub.add_parser("upload", help="upload patch files")
    p.add_argument("patches", nargs="+", metavar="PATCH_FILE")
    p.set_defaults(handler=cmd_upload)
    p = sub.add_parser("upload-dir", help="upload every *.patch of server-side directories")
    p.add_argument("dirs", nargs="+", metavar="DIR")
    p.set_defaults(handler=cmd_upload_dir)
    p = _with_ids(sub, "apply", cmd_apply, "put patches into the update repo", nargs="*")
    p.add_argument("--all", action="store_true", help="apply every available patch")
    p.add_argument("--skip-semantic", action="store_true")
    p = _with_ids(sub, "remove", cmd_remove, "take patches out of the update repo")
    p.add_argument("--skipappcheck", action="store_true")
    p.add_argument("--skip-semantic", action="store_true")
    p.add_argument("--removeunremovable", action="store_true", help=argparse.SUPPRESS)
    _with_ids(sub, "delete", cmd_simple("POST", "delete"), "delete available patches")
    p = sub.add_parser("query", help="list patches and their states")
    p.add_argument("state", nargs="?", default="all",
                   help="all (default), available, applied or committed")
    p.add_argument("--release", help="only patches of this release")
    p.set_defaults(handler=cmd_query)
    _with_ids(sub, "show", cmd_show, "show patch details")
    _with_ids(sub, "what-requires", cmd_simple("GET", "what_requires"),
              "list the patches that require these")
    sub.add_parser("query-hosts", help="list hosts and their patch status").set_defaults(
        handler=cmd_query_hosts)
    _host_commands(sub)
    p = _with_ids(sub, "query-dependencies", cmd_query_dependencies,
                  "list the patches these require")
    p.add_argument("--recursive", action="store_true")
    _with_ids(sub, "is-applied", cmd_is_state("is_applied"), "are all these applied?")
    _with_ids(sub, "is-available", cmd_is_state("is_available"), "are all these available?")
    p = _with_ids(sub, "report-app-dependencies", cmd_report_app_dependencies,
                  "record the patches an application needs", nargs="*")
    p.add_argument("--app", required=True)
    sub.add_parser("query-app-dependencies", help="list application dependencies")\
        .set_defaults(handler=cmd_query_app_dependencies)
    p = _with_ids(sub, "commit", cmd_commit, "make patches permanent", nargs="*")
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--all", action="store_true")
    p.add_argument("--release", help="with --all: the release (default: the running one)")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    _release_commands(sub)
    sub.add_parser("install-local", help="not supported (see its message)").set_defaults(
        handler=cmd_install_local)
    p = sub.add_parser("completion", help="patch IDs or hostnames, for shell completion")
    p.add_argument("what", choices=("patches", "hosts"))
    p.set_defaults(handler=cmd_completion)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return 1
    try:
        return args.handler(Api(args), args)
    except Unreachable as exc:
        print(exc, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
