"""``metalcast-agent`` entry point (ramdisk mode).

In the ramdisk: ``metalcast-agent`` with no flags reads ``ipa-api-url=``,
``BOOTIF=``, ``ipa-insecure=`` ... from /proc/cmdline. In the virtual lab and the
tests::

    metalcast-agent --api-url http://127.0.0.1:6385 --mac 52:54:00:12:34:56 \\
        --disk /var/lib/lab/node1.img --listen 127.0.0.1:0 --advertise-host 127.0.0.1 \\
        --power-action exit --state-file /var/lib/lab/node1.state --cmdline-file ''

Once the command API listens it prints ``METALCAST-AGENT {"node_uuid", "callback_url"}``.
Exit status: 0 after a power action in ``exit`` mode or SIGTERM, 1 when lookup fails,
2 on bad arguments.
"""
from __future__ import annotations

import json
import logging
import signal
import sys

from ramdisk_agent import inventory
from ramdisk_agent.cmdline import build_parser, load
from ramdisk_agent.errors import AgentError


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["host"]:        # installed host: ramdisk_agent/hostmode.py
        from ramdisk_agent import hostmode
        return hostmode.main(argv[1:])
    if argv[:1] == ["update"]:      # A/B image updates: ramdisk_agent/host/update/
        from ramdisk_agent.host.update import cli as update_cli
        return update_cli.main(argv[1:])
    try:
        config, args = load(argv)
    except ValueError as exc:
        build_parser().error(str(exc))
    logging.basicConfig(level=logging.DEBUG if config.debug else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.print_inventory:
        try:
            print(json.dumps(inventory.collect(config.disks, (config.macs or [None])[0]),  # type: ignore[list-item]
                             indent=2))
        except ValueError as exc:
            build_parser().error(str(exc))
        return 0
    if not config.api_url:
        build_parser().error("no API URL: pass --api-url or boot with ipa-api-url=")
    try:
        inventory.list_disks(config.disks)      # bad --disk specs fail before lookup
    except ValueError as exc:
        build_parser().error(str(exc))
    from ramdisk_agent.agent import Agent  # command API, TLS: only when serving
    agent = Agent(config)
    signal.signal(signal.SIGTERM, lambda *_: agent.stop(0))
    try:
        return agent.run()
    except AgentError as exc:
        logging.getLogger("metalcast-agent").error("%s", exc.message)
        return 1
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
