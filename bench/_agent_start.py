"""One agent-equivalent process for bench/deploy_fleet.py's second reference.

    python bench/_agent_start.py URL DISK SHA256

Does, in a fresh Python process, what every ``metalcast-agent`` does whether a
conductor drives it or not: Python start-up and the agent's imports
(``ramdisk_agent.agent``: command API, extensions, API client), the disk
inventory of its ``--disk``, the self-signed TLS certificate and the command API
server bound to 127.0.0.1:0; then the same write as the first reference
(``stream_raw``, O_DIRECT, sha256). What it leaves out is only the conductor's
part: lookup, heartbeats, the commands and the power actions. Prints the write's
seconds; exit status 1 on a digest mismatch.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(url: str, disk: str, digest: str) -> int:
    from ramdisk_agent import inventory
    from ramdisk_agent.agent import Agent  # noqa: F401 - the agent's full import set
    from ramdisk_agent.commands import CommandRunner
    from ramdisk_agent.ramdisk.imagewrite import stream_raw
    from ramdisk_agent.server import create_app, make_certificate, serve_https

    inventory.list_disks([disk])
    with tempfile.TemporaryDirectory(prefix="bench-agent-tls-") as tls_dir:
        cert, key, _ = make_certificate("127.0.0.1", tls_dir)
        server = serve_https(create_app(CommandRunner([]), lambda: None), "127.0.0.1", 0,
                             cert, key)
        server.server_close()
    result = stream_raw(url, disk, "sha256")
    if result.digest != digest:
        print(f"{disk}: sha256 {result.digest}, expected {digest}", file=sys.stderr)
        return 1
    print(f"{result.seconds:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
