"""The two ``sw-patch`` commands that are conversations, as StarlingX's client holds
them: ``host-install`` (the request, then a poll of query_hosts, a dot per busy poll)
and ``commit`` (the list, a dry run, a question, the commit)."""
from __future__ import annotations

import os
import textwrap
import time

from cli import sw_patch_output as out
from cli.sw_patch_api import Unreachable, emit, join_ids
from cli.sw_patch_output import INTERNAL_ERROR

#: Seconds between query_hosts polls of ``host-install`` (StarlingX: 5).
POLL_INTERVAL = float(os.environ.get("SW_PATCH_POLL_INTERVAL", "5"))
#: Failed polls ``host-install`` tolerates before giving up (StarlingX: 4).
POLL_TOLERANCE = 4
#: The server's running release (``[patching] release``), on query answers: StarlingX's
#: client knows it from the controller it runs on; ``commit --all`` defaults to it.
RELEASE_HEADER = "X-Metalcast-Running-Release"
COMMIT_WARNING = ("WARNING: Committing a patch is an irreversible operation. Committed "
                  "patches cannot be removed.")


def _install_poll(api, host: str) -> int:
    """StarlingX's wait_for_install_complete: poll query_hosts, a dot while busy."""
    misses = 0
    while True:
        time.sleep(POLL_INTERVAL)  # the first too: the agent needs time to answer
        try:
            reply = api.call("GET", "query_hosts")
        except Unreachable:
            misses += 1
            if misses <= POLL_TOLERANCE:
                continue
            print("Lost communications with the patch controller")
            return 1
        if reply.status != 200:
            return _failed(reply)
        if "data" not in reply.data:
            print("Invalid query-hosts data returned:")
            out.print_debug(reply)
            return 1
        found = [h for h in reply.data["data"] if host in (h["hostname"], h["ip"])]
        if not found:   # a restarted controller has an empty table for a while
            misses += 1
            if misses <= POLL_TOLERANCE:
                continue
            print(f"{host} agent has timed out.")
            return 1
        state, interim = found[-1].get("state"), found[-1].get("interim_state")
        if state == "installing" or interim is True:
            print(".", end="", flush=True)
            continue
        return _install_outcome(state)


#: Agent state -> (what host-install prints, exit code).
OUTCOMES = {"install-rejected": ("\nInstallation rejected. Node must be locked", 1),
            "install-failed": ("\nInstallation failed. Please check logs for details.", 1),
            "idle": ("\nInstallation was successful.", 0)}


def _install_outcome(state: str) -> int:
    message, rc = OUTCOMES.get(state, (f"\nPatch agent is reporting unknown state: {state}",
                                       1))
    print(message)
    return rc


def cmd_host_install(api, args) -> int:
    path = f"host_install_async/{args.host}" + ("/force" if args.force else "")
    reply = api.call("POST", path)
    if reply.status == 200 and reply.error:
        print("Error:")
        print(reply.error)
        return 1
    if reply.status != 200:
        return _failed(reply)
    return _install_poll(api, args.host)


def _failed(reply) -> int:
    """A reply other than 200: StarlingX's 500 line, our reason on stderr; exit 1."""
    if reply.status == 500:
        print(INTERNAL_ERROR)
    out.explain(reply)
    return 1


def _commit_list(api, args) -> tuple[str | None, int]:
    """The patches to commit, "/"-joined, after printing them as StarlingX does; or
    (None, exit code) when there is nothing to commit."""
    if args.all:
        params = {"show": "all", **({"release": args.release} if args.release else {})}
        reply = api.call("GET", "query", params=params)
        if reply.status == 500:
            print("Failed to get patch list. Aborting...")
            return None, 1
        out.explain(reply)
        release = args.release or reply.headers.get(RELEASE_HEADER, "")
        pd = reply.data.get("pd", {}) if reply.status == 200 else {}
        ids = sorted(pid for pid, patch in pd.items() if patch["sw_version"] == release)
        if not ids:
            print(f"There are no {release} patches to commit.")
            return None, 0
    else:
        reply = api.call("GET", f"query_dependencies/{join_ids(args.patches)}",
                         params={"recursive": "yes"})
        if reply.status == 500:
            print(INTERNAL_ERROR)
            return None, 1
        if reply.status == 200 and "patches" not in reply.data:
            print("No patches found to commit")
            return None, 1
        ids = reply.data.get("patches", []) if reply.status == 200 else []
    if reply.status == 200:
        print("The following patches will be committed:")
        for pid in sorted(ids):
            print(f"    {pid}")
        print()
    # StarlingX commits the IDs given (the server adds what they require), or all.
    return join_ids(ids if args.all else args.patches), 0


def cmd_commit(api, args) -> int:
    if args.release and not args.all:
        print("Use of --release option requires --all")
        return 1
    patches, rc = _commit_list(api, args)
    if patches is None:
        return rc
    dry = api.call("POST", f"commit_dry_run/{patches}")
    out.print_op_result(dry)
    out.explain(dry)
    if dry.rc:
        print("Aborting...")
        return 1
    if args.dry_run:
        return 0
    print()
    print(textwrap.fill(COMMIT_WARNING, width=out.term_width(), subsequent_indent=" " * 9))
    print()
    if not args.yes and _ask("Would you like to continue? [y/N]: ") != "y":
        print("Aborting...")
        return 1
    return emit(args, api.call("POST", f"commit/{patches}"))


def _ask(prompt: str) -> str:
    """The lower-cased answer; a closed stdin (EOF) answers "no"."""
    try:
        return input(prompt).lower()
    except EOFError:
        print()
        return ""
