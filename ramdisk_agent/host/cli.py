"""``metalcast-agent host ...``: run the patch engine by hand and print JSON.

``main(argv)`` takes the arguments after ``host``; every setting also reads
``METALCAST_HOST_<NAME>`` from the environment (e.g. METALCAST_HOST_BASE_URL).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from ramdisk_agent.errors import PatchEngineError
from ramdisk_agent.host.engine import PatchEngine


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """The PatchEngine settings, shared by these one-shot actions and hostmode's agent."""
    env = os.environ.get
    parser.add_argument("--root", default=env("METALCAST_HOST_ROOT", "/"))
    parser.add_argument("--dbpath", default=env("METALCAST_HOST_DBPATH", "/var/lib/rpm"))
    parser.add_argument("--base-url", default=env("METALCAST_HOST_BASE_URL"))
    parser.add_argument("--updates-url", default=env("METALCAST_HOST_UPDATES_URL"))
    parser.add_argument("--sw-version", default=env("METALCAST_HOST_SW_VERSION"))
    parser.add_argument("--nodetype", default=env("METALCAST_HOST_NODETYPE", "controller"))
    parser.add_argument("--subfunctions", default=env("METALCAST_HOST_SUBFUNCTIONS"),
                        help="comma separated, e.g. controller,worker")
    parser.add_argument("--run-dir", default=env("METALCAST_HOST_RUN_DIR"))
    parser.add_argument("--cache-dir", default=env("METALCAST_HOST_CACHE_DIR"))


def engine_from_args(args: argparse.Namespace) -> PatchEngine:
    """The PatchEngine the ``add_engine_arguments`` options describe (may raise
    PatchEngineError or ValueError on bad settings)."""
    return PatchEngine(
        args.root, args.dbpath, base_repo_url=args.base_url,
        updates_repo_url=args.updates_url, sw_version=args.sw_version,
        nodetype=args.nodetype,
        subfunctions=args.subfunctions.split(",") if args.subfunctions else None,
        run_dir=args.run_dir, cache_dir=args.cache_dir)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="metalcast-agent host", description=__doc__)
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--report", dest="action", action="store_const", const="report")
    action.add_argument("--install", dest="action", action="store_const", const="install")
    action.add_argument("--boot-install", dest="action", action="store_const",
                        const="boot_install")
    action.add_argument("--install-root", metavar="MOUNTPOINT",
                        help="install the Applied patches into a freshly written root")
    parser.add_argument("--force", action="store_true", help="install on an unlocked host")
    add_engine_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.base_url or not args.sw_version:
        parser.error("--base-url and --sw-version are required")
    try:
        engine = engine_from_args(args)
        if args.install_root:
            result = engine.install_into_root(args.install_root)
        elif args.action == "report":
            result = engine.report()
        elif args.action == "install":
            result = engine.install(force=args.force)
        else:
            result = engine.boot_install()
    except (PatchEngineError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2, sort_keys=True))
    if args.action == "report":
        return 1 if result["out_of_date"] else 0   # like sw-patch-agent --status
    return 0 if result.get("status", True) else 1


if __name__ == "__main__":
    sys.exit(main())
