"""``metalcast patch build`` / ``sw-patch-build`` and ``metalcast patch keygen``.

The options are StarlingX ``patch_build``'s; node-type options name packages a
patch adds to that personality (comps group ``updates-<type>``), positional
arguments are the RPM files the patch contains.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from types import ModuleType

from conductor import config as config_mod
from conductor import errors
from conductor.cmd import command
from conductor.patching import build, metadata, signing

PERSONALITY_OPTIONS = {f"--{p}": p for p in metadata.PERSONALITIES}


def data_dir(args) -> Path:
    value = getattr(args, "data_dir", None) or os.environ.get("METALCAST_DATA_DIR") or \
        config_mod.DEFAULT_DATA_DIR
    return Path(os.path.expanduser(value))


def add_build_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("rpms", nargs="*", metavar="RPM", help="RPM files the patch contains")
    p.add_argument("--id", required=True, help="patch ID (the file becomes ID.patch)")
    p.add_argument("--release", required=True, help="software release, e.g. 1.0")
    p.add_argument("--status", default="DEV", choices=metadata.STATUSES)
    p.add_argument("--unremovable", action="store_true", help="the patch cannot be removed")
    p.add_argument("--reboot-required", default="Y", choices=("Y", "N"),
                   help="N for an in-service patch (default Y)")
    p.add_argument("--summary", default="")
    p.add_argument("--desc", default="", help="description")
    p.add_argument("--warn", default="", help="warnings")
    p.add_argument("--inst", default="", help="install instructions")
    p.add_argument("--req", action="append", default=[], metavar="PATCH_ID",
                   help="a patch this one requires (repeatable)")
    for option, personality in PERSONALITY_OPTIONS.items():
        p.add_argument(option, action="append", default=[], metavar="PACKAGE",
                       dest=f"pers_{personality}",
                       help=f"package to install on {personality} nodes (repeatable)")
    p.add_argument("--all-nodes", action="append", default=[], metavar="PACKAGE",
                   help="package to install on every node type (repeatable)")
    p.add_argument("--pre-apply", type=Path, help="semantic check script run before apply")
    p.add_argument("--pre-remove", type=Path, help="semantic check script run before remove")
    p.add_argument("--apply-active-release-only", action="store_true")
    p.add_argument("--key", type=Path, help="RSA signing key (default DATA_DIR/patching/"
                   "keys/formal-private-key.pem; make one with `metalcast patch keygen`)")
    p.add_argument("--output-dir", "-o", type=Path, default=Path("."),
                   help="where ID.patch is written (default: current directory)")
    p.add_argument("--data-dir", help="metalcast data directory (for the default key)")


def run_build(args) -> int:
    personalities = {p: list(getattr(args, f"pers_{p}")) + list(args.all_nodes)
                     for p in metadata.PERSONALITIES}
    request = build.BuildRequest(
        id=args.id, release=args.release, rpms=[Path(r) for r in args.rpms],
        status=args.status, unremovable=args.unremovable,
        reboot_required=args.reboot_required, summary=args.summary,
        description=args.desc, warnings=args.warn, install_instructions=args.inst,
        requires=args.req, personalities=personalities, pre_apply=args.pre_apply,
        pre_remove=args.pre_remove, apply_active_release_only=args.apply_active_release_only)
    key = args.key or data_dir(args) / "patching" / "keys" / "formal-private-key.pem"
    if not key.exists():
        raise errors.InvalidParameter(f"signing key {key} does not exist: create one with "
                                      "`metalcast patch keygen` or pass --key")
    path = build.build(request, key, args.output_dir)
    print(f"Patch {args.id} written to {path}")
    return 0


def add_keygen_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name", default="formal", choices=("formal", "dev"),
                   help="key name: dev keys raise the developer-certificate alarm")
    p.add_argument("--data-dir", help="metalcast data directory")


def run_keygen(args) -> int:
    root = data_dir(args) / "patching"
    key, cert = signing.generate(root / "keys", root / "trusted", args.name)
    print(f"Private key: {key}\nTrusted certificate: {cert}\n"
          "Copy the certificate into the trust directory of every conductor that "
          "must accept patches signed with this key.")
    return 0


# ``metalcast patch build|keygen`` pass the words after the command through unparsed
# (``args.argv``): these options, --help included, are parsed here, next to the code
# that knows the personalities and statuses.
@command
def build_command(args, output: ModuleType) -> int:
    """``metalcast patch build``."""
    parser = argparse.ArgumentParser(prog="metalcast patch build")
    add_build_arguments(parser)
    return run_build(parser.parse_args(args.argv))


@command
def keygen_command(args, output: ModuleType) -> int:
    """``metalcast patch keygen``."""
    parser = argparse.ArgumentParser(prog="metalcast patch keygen")
    add_keygen_arguments(parser)
    return run_keygen(parser.parse_args(args.argv))


def main(argv=None) -> int:
    """``sw-patch-build``: the same options as ``metalcast patch build``."""
    parser = argparse.ArgumentParser(prog="sw-patch-build",
                                     description="Build a signed StarlingX-format patch.")
    add_build_arguments(parser)
    return command(run_build)(parser.parse_args(argv))
