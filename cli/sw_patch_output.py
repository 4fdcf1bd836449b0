"""What ``sw-patch`` prints: StarlingX 6.0.0's client (cgcs_patch/patch_client.py), line
for line: its tables, its show layout, its info/Warning:/Error: blocks, its debug dump
and its one message for an HTTP 500.

Column order, centring, ``=`` underlines, two-space gaps, the 15-character show
labels with a 20-space hanging indent at the terminal width less 4 (72 when it is
unknown or 60 columns or less): specs/starlingx-patching.md §3.1. Each printer takes
the :class:`Reply` of one call. Where StarlingX's client says nothing about a failed
call (an HTTP error other than 500), :func:`explain` says it on stderr, so stdout
stays StarlingX's.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import textwrap
from collections.abc import Mapping
from typing import Any

INTERNAL_ERROR = ("An internal error has occurred. Please check /var/log/patching.log "
                  "for details")
INDENT = " " * 20


@dataclasses.dataclass(frozen=True)
class Reply:
    """One answer of the patch API: the HTTP status, the JSON body (a non-JSON or
    Ironic-style error body becomes ``{"error": text}``) and the headers."""

    status: int
    data: Any
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @property
    def error(self) -> str:
        return str(self.data.get("error") or "") if isinstance(self.data, dict) else ""

    @property
    def rc(self) -> int:
        """StarlingX's check_rc: 0 only for HTTP 200 without an ``error`` text."""
        return 0 if self.status == 200 and not self.error else 1


def term_width() -> int:
    """StarlingX's TERM_WIDTH: ``tput cols`` less 4 when over 60 columns, else 72."""
    columns = shutil.get_terminal_size((0, 0)).columns
    return columns - 4 if columns > 60 else 72


def _fill(text: str, first: str = "") -> str:
    return textwrap.fill(text, width=term_width(), subsequent_indent=INDENT,
                         initial_indent=first)


def _label(label: str, value: str) -> None:
    print(_fill(f"    {label:<15} " + value))


def explain(reply: Reply) -> None:
    """On stderr, what failed when the HTTP status is not 200 (StarlingX's client
    prints nothing, or only its 500 message, or crashes)."""
    if reply.status != 200:
        print(f"Error: {reply.error or 'HTTP ' + str(reply.status)}", file=sys.stderr)


def blocks(data: dict) -> None:
    """info, then Warning: and Error: blocks, each text printed as it came."""
    if data.get("info"):
        print(data["info"])
    if data.get("warning"):
        print("Warning:")
        print(data["warning"])
    if data.get("error"):
        print("Error:")
        print(data["error"])


def print_op_result(reply: Reply) -> None:
    """StarlingX's print_patch_op_result: the query table if there is one, the blocks."""
    if reply.status == 200:
        if "pd" in reply.data:
            _query_table(reply.data["pd"])
            print("")
        blocks(reply.data)
    elif reply.status == 500:
        print(INTERNAL_ERROR)


def _table(headers: list[str], rows: list[list[str]], left: int,
           widths: list[int] | None = None) -> None:
    widths = widths or [max([len(h)] + [len(r[i]) for r in rows])
                        for i, h in enumerate(headers)]
    print("  ".join(f"{h:^{w}}" for h, w in zip(headers, widths)))
    print("  ".join("=" * w for w in widths))
    for row in rows:
        print("  ".join(f"{v:<{w}}" if i < left else f"{v:^{w}}"
                        for i, (v, w) in enumerate(zip(row, widths))))


def _query_table(pd: dict) -> None:
    show_repo = any(p["patchstate"] == "n/a" for p in pd.values())
    headers = ["Patch ID", "RR", "Release"] + (["Repo State"] if show_repo else []) + \
        ["Patch State"]
    rows = []
    for pid in sorted(pd):
        patch = pd[pid]
        row = [pid, patch.get("reboot_required", "Y"), patch["sw_version"]]
        row += [patch["repostate"]] if show_repo else []
        rows.append(row + [patch["patchstate"]])
    _table(headers, rows, left=1)


def print_hosts_result(reply: Reply) -> None:
    """StarlingX's print_query_hosts_result."""
    if reply.status == 500:
        print(INTERNAL_ERROR)
    if reply.status != 200:
        return
    if "data" not in reply.data:
        print("Invalid data returned:")
        print_debug(reply)
        return
    rows = []
    for host in sorted(reply.data["data"], key=lambda h: h["hostname"]):
        current = "Yes" if host["patch_current"] else "No"
        if host.get("interim_state") is True:
            current = "Pending"
        if host["patch_failed"]:
            current = "Failed"
        rows.append([host["hostname"], host["ip"], current,
                     "Yes" if host["requires_reboot"] else "No", host["sw_version"],
                     host["state"]])
    headers = ["Hostname", "IP Address", "Patch Current", "Reboot Required", "Release",
               "State"]
    # Its Patch Current and Reboot Required columns are as wide as their headers.
    widths = [max([len(h)] + [len(r[i]) for r in rows]) if i not in (2, 3) else len(h)
              for i, h in enumerate(headers)]
    _table(headers, rows, left=2, widths=widths)


def _multiline(label: str, text: str) -> None:
    for index, line in enumerate(text.split("\n")):
        if index == 0:
            _label(label, line)
        else:
            print(_fill(line, first=INDENT))


def _show_one(pid: str, patch: dict, contents: dict) -> None:
    print(f"{pid}:")
    for label, key in (("Release:", "sw_version"), ("Patch State:", "patchstate")):
        if patch.get(key, "") != "":
            _label(label, patch[key])
    if patch.get("patchstate") == "n/a" and patch.get("repostate", "") != "":
        _label("Repo State:", patch["repostate"])
    for label, key in (("Status:", "status"), ("Unremovable:", "unremovable"),
                       ("RR:", "reboot_required"),
                       ("Apply Active Release Only:", "apply_active_release_only"),
                       ("Summary:", "summary")):
        if patch.get(key, "") != "":
            _label(label, patch[key])
    if patch.get("description", "") != "":
        _multiline("Description:", patch["description"])
    if patch.get("install_instructions", "") != "":
        print("    Install Instructions:")
        for line in patch["install_instructions"].split("\n"):
            print(_fill(line, first=INDENT))
    if patch.get("warnings", "") != "":
        _multiline("Warnings:", patch["warnings"])
    if patch.get("requires"):
        print("    Requires:")
        for required in sorted(patch["requires"]):
            print(INDENT + required)
    if pid in contents:
        print("    Contents:")
        for rpm in sorted(contents[pid]):
            print(INDENT + rpm)
    print("\n")


def print_show_result(reply: Reply) -> None:
    """StarlingX's print_patch_show_result: each patch, two blank lines, the blocks."""
    if reply.status == 500:
        print(INTERNAL_ERROR)
    if reply.status != 200:
        return
    metadata = reply.data.get("metadata", {})
    for pid in sorted(metadata):
        _show_one(pid, metadata[pid], reply.data.get("contents", {}))
    blocks(reply.data)


def print_debug(reply: Reply) -> None:
    """StarlingX's print_result_debug (``--debug``): the JSON, sorted and indented."""
    if reply.status == 200:
        data = reply.data
        if isinstance(data, dict) and "pd" in data:
            data = data["pd"]
        elif isinstance(data, dict) and "data" in data:
            data = data["data"]
        print(json.dumps(data, sort_keys=True, indent=4, separators=(",", ": ")))
    elif reply.status == 500:
        print(INTERNAL_ERROR)


def print_app_dependencies(data: dict) -> None:
    """StarlingX's query-app-dependencies table (left-aligned, comma-joined)."""
    if not data:
        print("There are no application dependencies.")
        return
    rows = [[app, ", ".join(patches)] for app, patches in sorted(data.items())]
    widths = [max(len("Application"), *(len(r[0]) for r in rows)),
              max(len("Required Patches"), *(len(r[1]) for r in rows))]
    print(f"{'Application':<{widths[0]}}  {'Required Patches':<{widths[1]}}")
    print(f"{'=' * widths[0]}  {'=' * widths[1]}")
    for app, patches in rows:
        print(f"{app:<{widths[0]}}  {patches:<{widths[1]}}")
