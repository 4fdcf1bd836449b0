"""The agent's HTTPS command API in a process of its own, for the attack replays that
measure it (memory, threads): ``python -m tests.security.agent_api_process TOKEN DIR``.

It serves ``ramdisk_agent.server`` with the real extensions, the token given (as
after lookup) and a self-signed certificate written to DIR, on 127.0.0.1 port 0,
and prints ``AGENT_READY <port> <certificate path>`` once it listens. SIGTERM ends it.
"""
from __future__ import annotations

import signal
import sys
import threading

from ramdisk_agent.commands import CommandRunner
from ramdisk_agent.extensions import all_extensions
from ramdisk_agent.server import create_app, make_certificate, serve_https


def main(token: str, directory: str) -> int:
    cert, key, _ = make_certificate("127.0.0.1", directory)
    server = serve_https(create_app(CommandRunner(all_extensions(None)), lambda: token),
                         "127.0.0.1", 0, cert, key)
    thread = threading.Thread(target=server.serve_forever, args=(0.1,), daemon=True)
    thread.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(f"AGENT_READY {server.server_port} {cert}", flush=True)
    stop.wait()
    server.shutdown()
    server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1], sys.argv[2]))
