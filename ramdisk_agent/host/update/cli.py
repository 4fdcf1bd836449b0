"""``metalcast-agent update check|status|mark-good|reboot|daemon``: the host update engine.

``reboot`` runs the reboot strategy once now (window, lease, wall warning, reboot
command) for an installed update; ``daemon`` does all of it on the schedule.

Settings come from ``--config`` (default /etc/metalcast/update.conf) and ``--set
KEY=value`` (repeatable). ``check`` and ``status`` print update_engine_client's
lines (``CURRENT_OP=UPDATE_STATUS_…``, ``PROGRESS=``, ``NEW_VERSION=``, ``NEW_SIZE=``,
``Update succeeded -- reboot needed.``); ``--format json`` prints the state instead.
Exit status: 0 done, 1 the step failed (the message says why and what to do),
2 bad settings.
"""
from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading

from ramdisk_agent.errors import UpdateEngineError
from ramdisk_agent.host.update import config as update_config
from ramdisk_agent.host.update import factory
from ramdisk_agent.host.update import state as st


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="metalcast-agent update", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("check", "status", "mark-good", "reboot", "daemon"))
    parser.add_argument("--config", action="append", default=None,
                        help=f"update.conf file(s) (default {update_config.DEFAULT_PATH})")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one update.conf setting")
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.add_argument("--debug", action="store_true")
    return parser


def status_lines(state: st.EngineState) -> list[str]:
    checked = int(state.last_check)
    lines = [f"LAST_CHECKED_TIME={checked}", f"PROGRESS={state.progress:.2f}",
             f"CURRENT_OP={state.status}", f"NEW_VERSION={state.new_version or '0.0.0.0'}",
             f"NEW_SIZE={state.new_size}"]
    if state.last_error:
        lines.append(f"LAST_ERROR={state.last_error_code} {state.last_error}")
    return lines


class _Printer:
    """Prints a line per status change and per progress step, as update_engine_client -update."""

    def __init__(self) -> None:
        self.last: tuple[str, float] | None = None

    def __call__(self, state: st.EngineState) -> None:
        key = (state.status, state.progress)
        if key != self.last:
            self.last = key
            print(f"CURRENT_OP={state.status} PROGRESS={state.progress:.2f} "
                  f"NEW_VERSION={state.new_version or '0.0.0.0'} NEW_SIZE={state.new_size}",
                  flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        overrides = dict(_pair(item) for item in args.set)
        config = update_config.load(args.config or [update_config.DEFAULT_PATH], overrides,
                                    required=args.config is not None)
    except update_config.ConfigError as exc:
        parser.error(str(exc))
    try:
        return _run(args, factory.build(config))
    except UpdateEngineError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1


def _pair(item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep:
        raise update_config.ConfigError(f"--set {item!r}: write KEY=value")
    return key, value


def _run(args: argparse.Namespace, engine) -> int:
    if args.action == "status":
        state = engine.status()
    elif args.action == "check":
        if args.format == "text":
            engine.observer = _Printer()
        state = engine.check(interactive=True)
    elif args.action == "mark-good":
        result = engine.mark_good()
        print(("Marked good: " if result.ok else "Not marked good: ") + result.detail)
        return 0 if result.ok else 1
    elif args.action == "reboot":
        step = engine.reboot_step()
        print(f"REBOOT={step.action}" + (f" RETRY_IN={step.retry_in:.0f}" if step.retry_in
                                           else "") + (f" ({step.detail})" if step.detail else ""))
        return 0
    else:
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            engine.run(stop)
        except KeyboardInterrupt:
            pass
        return 0
    if args.format == "json":
        print(json.dumps(state.to_json(), indent=2, sort_keys=True))
    else:
        print("\n".join(status_lines(state)))
        if args.action == "check" and state.status == st.NEED_REBOOT:
            print("Update succeeded -- reboot needed.")
    return 0


