"""``metalcast image ...``: build delta payloads and show the key that signs them."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from types import ModuleType

from conductor import config as config_mod
from conductor import errors
from conductor.cmd import command
from conductor.updates import delta_build, keys


def _key_path(args) -> Path:
    if args.key:
        return Path(args.key)
    data_dir = args.data_dir or os.environ.get("METALCAST_DATA_DIR") or \
        config_mod.DEFAULT_DATA_DIR
    return keys.default_path(Path(os.path.expanduser(data_dir)))


@command
def delta(args, output: ModuleType) -> int:
    old, new = Path(args.old), Path(args.new)
    for path in (old, new):
        if not path.is_file():
            raise errors.InvalidParameter(f"{path} is not a file: give two raw disk images")
    out = Path(args.output) if args.output else new.with_name(new.name + ".delta")
    key = keys.load_private(Path(args.key)) if args.key else keys.load_or_create(
        _key_path(args))
    bar = output.Progress(100, f"delta {new.name}")
    state = {"pct": 0}

    def progress(done: int, total: int) -> None:
        pct = done * 100 // max(total, 1)
        if pct > state["pct"]:
            bar.advance(pct - state["pct"])
            state["pct"] = pct

    result = delta_build.build(old, new, out, key, version=args.image_version,
                               progress=progress)
    row = {"payload": str(result.path), "payload_bytes": result.payload_size,
           "operations": result.operations, "changed_bytes": result.changed_bytes,
           "target_bytes": result.target_size,
           "payload_percent_of_target": round(100 * result.payload_size /
                                              max(result.target_size, 1), 2)}
    output.show(row, args.format)
    return 0


@command
def pubkey(args, output: ModuleType) -> int:
    path = _key_path(args)
    key = keys.load_private(path) if path.exists() else keys.load_or_create(path)
    sys.stdout.write(keys.public_pem(key).decode())
    return 0
