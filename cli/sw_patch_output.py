"""Output of ``sw-patch``: StarlingX's tables, show layout and result blocks.

Column order, centring, ``=`` underlines, two-space gaps, the 15-character show
labels with a 20-space hanging indent: specs/starlingx-patching.md §3.1.
"""
from __future__ import annotations

import shutil
import textwrap


def _width() -> int:
    """sw-patch wraps at the terminal width minus 4 (72 when unknown)."""
    return max(shutil.get_terminal_size((76, 24)).columns - 4, 20)


def print_result(data: dict) -> None:
    """info, then Warning:/Error: blocks, as sw-patch prints them."""
    if data.get("info"):
        print(data["info"])
    if data.get("warning"):
        print("Warning:")
        print(data["warning"])
    if data.get("error"):
        print("Error:")
        print(data["error"])


def _table(headers: list[str], rows: list[list[str]], left: int) -> None:
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    print("  ".join(f"{h:^{w}}" for h, w in zip(headers, widths)))
    print("  ".join("=" * w for w in widths))
    for row in rows:
        print("  ".join(f"{v:<{w}}" if i < left else f"{v:^{w}}"
                        for i, (v, w) in enumerate(zip(row, widths))))


def print_query(data: dict) -> None:
    pd = data.get("pd", {})
    show_repo = any(p.get("patchstate") == "n/a" for p in pd.values())
    headers = ["Patch ID", "RR", "Release"] + (["Repo State"] if show_repo else []) + \
        ["Patch State"]
    rows = []
    for pid in sorted(pd):
        patch = pd[pid]
        row = [pid, patch.get("reboot_required", "Y"), patch["sw_version"]]
        row += [patch["repostate"]] if show_repo else []
        rows.append(row + [patch["patchstate"]])
    _table(headers, rows, left=1)
    print("")
    print_result(data)


def print_hosts(hosts: list[dict]) -> None:
    rows = []
    for host in sorted(hosts, key=lambda h: h["hostname"]):
        current = "Yes" if host["patch_current"] else "No"
        if host.get("interim_state") is True:
            current = "Pending"
        if host["patch_failed"]:
            current = "Failed"
        rows.append([host["hostname"], host["ip"], current,
                     "Yes" if host["requires_reboot"] else "No", host["sw_version"],
                     host["state"]])
    _table(["Hostname", "IP Address", "Patch Current", "Reboot Required", "Release",
            "State"], rows, left=2)


def _label(label: str, value: str) -> None:
    print(textwrap.fill(f"    {label:<15} " + value, width=_width(),
                        subsequent_indent=" " * 20))


def _block(label: str, text: str) -> None:
    for index, line in enumerate(text.split("\n")):
        if index == 0:
            _label(label, line)
        else:
            print(textwrap.fill(line, width=_width(), initial_indent=" " * 20,
                                subsequent_indent=" " * 20))


def print_show(data: dict) -> None:
    for pid in sorted(data.get("metadata", {})):
        patch, contents = data["metadata"][pid], data.get("contents", {}).get(pid, [])
        print(f"{pid}:")
        for label, key in (("Release:", "sw_version"), ("Patch State:", "patchstate")):
            if patch.get(key):
                _label(label, patch[key])
        if patch.get("patchstate") == "n/a" and patch.get("repostate"):
            _label("Repo State:", patch["repostate"])
        for label, key in (("Status:", "status"), ("Unremovable:", "unremovable"),
                           ("RR:", "reboot_required"),
                           ("Apply Active Release Only:", "apply_active_release_only"),
                           ("Summary:", "summary")):
            if patch.get(key):
                _label(label, patch[key])
        if patch.get("description"):
            _block("Description:", patch["description"])
        if patch.get("install_instructions"):
            print("    Install Instructions:")
            for line in patch["install_instructions"].split("\n"):
                print(textwrap.fill(line, width=_width(), initial_indent=" " * 20,
                                    subsequent_indent=" " * 20))
        if patch.get("warnings"):
            _block("Warnings:", patch["warnings"])
        for label, values in (("Requires:", patch.get("requires", [])),
                              ("Contents:", contents)):
            if values:
                print(f"    {label:<15} ")
                for value in sorted(values):
                    print(" " * 20 + value)
        print("\n")
    if data.get("error"):
        print("Error:")
        print(data["error"])


def print_app_dependencies(data: dict) -> None:
    if not data:
        print("There are no application dependencies.")
        return
    rows = [[app, ",".join(patches)] for app, patches in sorted(data.items())]
    widths = [max(len("Application"), *(len(r[0]) for r in rows)),
              max(len("Required Patches"), *(len(r[1]) for r in rows))]
    print(f"{'Application':<{widths[0]}}  {'Required Patches':<{widths[1]}}")
    print(f"{'=' * widths[0]}  {'=' * widths[1]}")
    for app, patches in rows:
        print(f"{app:<{widths[0]}}  {patches:<{widths[1]}}")
