"""RPM conventions for patches that act on the running host (specs/starlingx-patching.md §4.5).

A *restart-script RPM* installs its script under ``SCRIPTS_SOURCE`` and copies it
into ``/run/patching/patch-scripts`` from ``%post`` and ``%preun``, so the script
runs after the patch is applied and after it is removed (downgraded away). A
*reboot-required RPM* touches ``/run/node_is_patched_rr`` from the same two
scriptlets, which makes the agent skip restart scripts and keep the host
"requires reboot". rpm runs scriptlets chrooted in the target root, so these
paths are the root's own. The lines use only sh builtins and busybox applets
(mkdir, cp, chmod, touch) so a minimal root can run them.
"""
from __future__ import annotations

SCRIPTS_SOURCE = "/usr/share/patching/patch-scripts"
RUN_SCRIPTS = "/run/patching/patch-scripts"
RR_FLAG = "/run/node_is_patched_rr"


def restart_script_scriptlets(script: str) -> str:
    """``%post`` and ``%preun`` of an RPM shipping restart script ``script``."""
    if "/" in script or script.startswith("."):
        raise ValueError(f"bad restart script name {script!r}")
    copy = (f"mkdir -p {RUN_SCRIPTS}\n"
            f"cp {SCRIPTS_SOURCE}/{script} {RUN_SCRIPTS}/{script}\n"
            f"chmod 700 {RUN_SCRIPTS}/{script}\n")
    return f"%post\n{copy}\n%preun\n{copy}\n"


def reboot_required_scriptlets() -> str:
    """``%post`` and ``%preun`` of an RPM whose patch needs a reboot."""
    touch = f"mkdir -p /run\ntouch {RR_FLAG}\n"
    return f"%post\n{touch}\n%preun\n{touch}\n"
