"""``write_image`` in a process of its own, for the qcow2 attack replays that measure
what the write costs: ``python -m tests.security.qcow2_write_process URL SHA256 DISK
SCRATCH_DIR``.

Prints one JSON line: the agent error (type, message) or the virtual size written,
and the memory the write added to the process (VmHWM after it minus VmRSS before,
the high-water mark reset through /proc/self/clear_refs first), in MiB.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ramdisk_agent.errors import AgentError
from ramdisk_agent.ramdisk.download import DownloadOptions
from ramdisk_agent.ramdisk.imagewrite import ImageSpec, write_image


def vm_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} is missing from /proc/self/status")


def main(url: str, digest: str, disk: str, scratch: str) -> int:
    spec = ImageSpec.from_image_info({"urls": [url], "disk_format": "qcow2",
                                      "os_hash_algo": "sha256", "os_hash_value": digest})
    base = vm_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5\n")
    outcome: dict = {"error": None, "size": None}
    try:
        outcome["size"] = write_image(spec, disk, DownloadOptions(retry_delay=0.05, timeout=10),
                                      scratch_dir=scratch).size
    except AgentError as exc:
        outcome["error"] = [type(exc).__name__, exc.message]
    outcome["peak_extra_mib"] = (vm_kib("VmHWM") - base) / 1024
    print(json.dumps(outcome), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:5]))
