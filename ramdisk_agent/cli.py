"""``metalcast-agent`` entry point.

The agent's ramdisk and host modes arrive with the agent work; until then the
command states that plainly instead of pretending to run.
"""
from __future__ import annotations

import argparse
import sys

from ramdisk_agent import __version__


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="metalcast-agent",
        description="metalcast agent: looks itself up at the metalcast API, heartbeats "
                    "and runs deploy/clean commands (ironic-python-agent protocol).")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--api-url", help="metalcast API URL (kernel arg ipa-api-url)")
    args = parser.parse_args(argv)
    print("metalcast-agent: no agent mode is available in this release yet; "
          f"nothing was done (api url: {args.api_url}).", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
