"""``sw-patch``: StarlingX's patching CLI against metalcast's ``/patching/v1`` API.

Sub-commands, messages and exit codes are sw-patch's (specs/starlingx-patching.md
§3.1): 0 on success, 1 when the API answered with an ``error``; ``is-applied`` and
``is-available`` print the bool and exit 0 only for True. ``--format json`` prints
the API's JSON. The connection is the ``metalcast`` CLI's (``--url`` or
METALCAST_URL, METALCAST_USERNAME / METALCAST_PASSWORD).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import requests

from cli import sw_patch_output as out
from cli.client import Client

#: Seconds between query_hosts polls of ``host-install`` (StarlingX: 5).
POLL_INTERVAL = float(os.environ.get("SW_PATCH_POLL_INTERVAL", "5"))
#: Failed polls ``host-install`` tolerates before giving up (StarlingX: 4).
POLL_TOLERANCE = 4


class Api:
    """Raw calls to /patching/v1; sw-patch judges results by their ``error`` text."""

    def __init__(self, args):
        self.client = Client(args.url, args.username, args.password, retries=0)
        self.debug = args.debug

    def call(self, method: str, path: str, **kwargs) -> tuple[int, object]:
        url = f"{self.client.url}/patching/v1/{path}"
        try:
            response = self.client.session.request(method, url, timeout=600, **kwargs)
        except requests.ConnectionError:
            raise SystemExit(f"Failed to connect to the patching API at {self.client.url}: "
                             "is `metalcast serve` running? (set --url or METALCAST_URL)"
                             ) from None
        if self.debug:
            print(response.text)
        if response.status_code == 401:
            raise SystemExit("Authentication failed: set METALCAST_USERNAME and "
                             "METALCAST_PASSWORD")
        try:
            data = response.json()
        except ValueError:
            return response.status_code, {"error": response.text or response.reason}
        if response.status_code != 200 and isinstance(data, dict) and not data.get("error"):
            # An API error (404, 405, ...) in the Ironic shape: show it, not nothing.
            data = dict(data, error=str(data.get("error_message") or response.reason))
        return response.status_code, data


def _rc(status: int, data) -> int:
    failed = status != 200 or (isinstance(data, dict) and data.get("error"))
    return 1 if failed else 0


def _emit(args, status, data, printer=out.print_result) -> int:
    if args.format == "json":
        print(json.dumps(data, indent=2, sort_keys=True))
    else:
        printer(data)
    return _rc(status, data)


def _ids(ids: list[str]) -> str:
    return "/".join(ids)


# -- commands -----------------------------------------------------------------------
def cmd_upload(api, args) -> int:
    rc = 0
    for path in args.patches:
        if not Path(path).is_file():
            print(f"Error: File does not exist: {path}")
            rc = 1
            continue
        with open(path, "rb") as stream:
            status, data = api.call("POST", "upload", files={"file": (Path(path).name,
                                                                      stream)})
        rc = _emit(args, status, data) or rc
    return rc


def cmd_upload_dir(api, args) -> int:
    params = {f"dir{i}": os.path.abspath(d) for i, d in enumerate(args.dirs)}
    return _emit(args, *api.call("POST", "upload_dir", params=params))


def cmd_apply(api, args) -> int:
    ids = ["--all"] if args.all else args.patches
    params = {"skip-semantic": "yes"} if args.skip_semantic else {}
    return _emit(args, *api.call("POST", f"apply/{_ids(ids)}", params=params))


def cmd_remove(api, args) -> int:
    params = {key: "yes" for key, on in (("skip-semantic", args.skip_semantic),
                                         ("skipappcheck", args.skipappcheck),
                                         ("removeunremovable", args.removeunremovable)) if on}
    return _emit(args, *api.call("POST", f"remove/{_ids(args.patches)}", params=params))


def cmd_simple(method: str, path: str):
    def run(api, args) -> int:
        return _emit(args, *api.call(method, f"{path}/{_ids(args.patches)}"))
    return run


def cmd_query(api, args) -> int:
    params = {"show": args.state}
    if args.release:
        params["release"] = args.release
    status, data = api.call("GET", "query", params=params)
    return _emit(args, status, data, printer=out.print_query)


def cmd_show(api, args) -> int:
    status, data = api.call("POST", f"show/{_ids(args.patches)}")
    return _emit(args, status, data, printer=out.print_show)


def cmd_query_hosts(api, args) -> int:
    status, data = api.call("GET", "query_hosts")
    return _emit(args, status, data, printer=lambda d: out.print_hosts(d.get("data", [])))


def cmd_query_dependencies(api, args) -> int:
    params = {"recursive": "yes"} if args.recursive else {}
    status, data = api.call("GET", f"query_dependencies/{_ids(args.patches)}", params=params)

    def printer(d):
        for pid in d.get("patches", []):
            print(pid)
        out.print_result({"error": d.get("error", "")})
    return _emit(args, status, data, printer)


def cmd_is_state(path: str):
    def run(api, args) -> int:
        status, data = api.call("POST", f"{path}/{_ids(args.patches)}")
        print(data if args.format == "json" else bool(data) and data is True)
        return 0 if status == 200 and data is True else 1
    return run


def cmd_report_app_dependencies(api, args) -> int:
    status, data = api.call("POST", f"report_app_dependencies/{_ids(args.patches)}",
                            params={"app": args.app})
    return 0 if status == 200 and data is True else _emit(args, status, data)


def cmd_query_app_dependencies(api, args) -> int:
    status, data = api.call("GET", "query_app_dependencies")
    return _emit(args, status, data, printer=out.print_app_dependencies)


def _install_poll(api, host: str) -> int:
    """Poll query_hosts as sw-patch host-install does, printing dots while busy."""
    misses = 0
    while True:
        time.sleep(POLL_INTERVAL)
        try:
            status, data = api.call("GET", "query_hosts")
        except SystemExit:
            status, data = 0, {}
        entry = next((h for h in data.get("data", []) if host in (h["hostname"], h["ip"])),
                     None) if status == 200 else None
        if entry is None:
            misses += 1
            if misses > POLL_TOLERANCE:
                print("\nAgent has timed out." if status == 200 else "\nLost communications.")
                return 1
            continue
        misses = 0
        if entry["state"] == "installing" or entry.get("interim_state"):
            print(".", end="", flush=True)
            continue
        return _install_outcome(entry["state"])


def _install_outcome(state: str) -> int:
    messages = {"install-rejected": ("\nInstallation rejected. Node must be locked", 1),
                "install-failed": ("\nInstallation failed. Please check logs for details.", 1),
                "idle": ("\nInstallation was successful.", 0)}
    message, rc = messages.get(state, (f"\nPatch installation failed: state {state}", 1))
    print(message)
    return rc


def cmd_host_install(api, args, wait: bool = True) -> int:
    path = f"host_install_async/{args.host}" + ("/force" if args.force else "")
    status, data = api.call("POST", path)
    rc = _emit(args, status, data)
    if rc or not wait:
        return rc
    return _install_poll(api, args.host)


def cmd_drop_host(api, args) -> int:
    return _emit(args, *api.call("POST", f"drop_host/{args.host}"))


def cmd_commit(api, args) -> int:
    if args.release and not args.all:
        print("Error: --release is only valid with --all")
        return 1
    if args.all:
        status, data = api.call("GET", "query", params={"release": args.release or ""})
        ids = sorted(data.get("pd", {}))
    else:
        status, data = api.call("GET", f"query_dependencies/{_ids(args.patches)}",
                                params={"recursive": "yes"})
        ids = data.get("patches", [])
    if status != 200 or data.get("error") or not ids:
        out.print_result(data if data.get("error") else {"error": "There are no patches "
                                                         "to commit.\n"})
        return 1
    print("The following patches will be committed:")
    for pid in ids:
        print(f"    {pid}")
    status, dry = api.call("POST", f"commit_dry_run/{_ids(ids)}")
    out.print_result(dry)
    if _rc(status, dry) or args.dry_run:
        return _rc(status, dry)
    if not args.yes:
        print("WARNING: Committing a patch is an irreversible operation. Committed patches "
              "cannot be removed.")
        if _ask("Would you like to continue? [y/N]: ") != "y":
            print("The commit operation has been aborted.")
            return 1
    return _emit(args, *api.call("POST", f"commit/{_ids(ids)}"))


def _ask(prompt: str) -> str:
    """The lower-cased answer; a closed stdin (EOF) answers "no"."""
    try:
        return input(prompt).strip().lower()
    except EOFError:
        print()
        return ""


def cmd_release(path: str):
    """init-release / del-release: errors are shown without an "Error:" prefix (§3)."""
    def run(api, args) -> int:
        if args.release in (".", "..") or "/" in args.release:
            print(f"Error: Invalid release: {args.release!r}")
            return 1
        return _emit(args, *api.call("POST", f"{path}/{args.release}"))
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
    """Patch IDs on one line, or one hostname per line (sw-patch's shell completion)."""
    if args.what == "patches":
        status, data = api.call("GET", "query")
        if status == 200 and isinstance(data, dict):
            print(" ".join(sorted(data.get("pd", {}))))
    else:
        status, data = api.call("GET", "query_hosts")
        if status == 200 and isinstance(data, dict):
            for host in sorted(h["hostname"] for h in data.get("data", [])):
                print(host)
    return 0 if status == 200 else 1


def _with_ids(sub, name: str, handler, help_text: str, nargs: str = "+"):
    p = sub.add_parser(name, help=help_text)
    p.add_argument("patches", nargs=nargs, metavar="PATCH_ID")
    p.set_defaults(handler=handler)
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sw-patch", description="Manage StarlingX-format patches on a metalcast "
        "conductor (sw-patch compatible).")
    parser.add_argument("--url", help="API URL (env METALCAST_URL)")
    parser.add_argument("--username", help="HTTP basic user (env METALCAST_USERNAME)")
    parser.add_argument("--password", help="HTTP basic password (env METALCAST_PASSWORD)")
    parser.add_argument("--debug", action="store_true", help="print the raw JSON replies")
    parser.add_argument("--format", choices=("table", "json"), default="table",
                        help="output format (default: sw-patch's tables)")
    sub = parser.add_subparsers(metavar="COMMAND")
    # --format is accepted after the sub-command too (sw-patch query --format json).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--format", choices=("table", "json"), default=argparse.SUPPRESS,
                        help="output format (default: sw-patch's tables)")
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
                   choices=("all", "available", "applied", "committed"))
    p.add_argument("--release", help="only patches of this release")
    p.set_defaults(handler=cmd_query)
    _with_ids(sub, "show", cmd_show, "show patch details")
    _with_ids(sub, "what-requires", cmd_simple("GET", "what_requires"),
              "list the patches that require these")
    sub.add_parser("query-hosts", help="list hosts and their patch status").set_defaults(
        handler=cmd_query_hosts)
    for name, wait in (("host-install", True), ("host-install-async", False)):
        p = sub.add_parser(name, help="install pending patches on a host" +
                           ("" if wait else " (do not wait)"))
        p.add_argument("--force", action="store_true", help="install on an unlocked host")
        p.add_argument("host", help="hostname or IP address")
        p.set_defaults(handler=lambda api, args, w=wait: cmd_host_install(api, args, w))
    p = sub.add_parser("drop-host", help="forget a host")
    p.add_argument("host")
    p.set_defaults(handler=cmd_drop_host)
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
    p.add_argument("--release")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    for name, path, what in (
            ("init-release", "init_release", "create the empty update repo of"),
            ("del-release", "del_release", "delete the patches and update repo of")):
        p = sub.add_parser(name, help=f"{what} a release that is not running")
        p.add_argument("release")
        p.set_defaults(handler=cmd_release(path))
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
    return args.handler(Api(args), args)


if __name__ == "__main__":
    sys.exit(main())
