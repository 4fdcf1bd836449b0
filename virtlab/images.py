"""Small but real bootable disk images for the virtual lab (demo and tests).

``build_image`` makes a sparse raw disk image: a GPT with an ESP and a Linux
root partition (one ``sgdisk`` call: every writing call costs 1 s, test-lab.md
section 7), and an ext4 root file system made by ``mkfs.ext4 -d`` straight into
the partition's byte range (``-E offset=``) holding ``/etc/os-release`` with the
given version. ``virtlab.disk.find_os`` reads it back the way the lab's firmware
does. ``build_versions`` makes the v1/v2 pair of the demo's (delta) update.
Fixed GUIDs, file system UUID, hash seed and times make two builds nearly
identical (only inode change times, which the host sets, differ), so v1 and v2
differ in a handful of 4 KiB blocks: what a delta update ships.

    python -m virtlab.images OUT.img --version 2 [--size-mib 64]
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ramdisk_agent.host import slots
from virtlab import disk

MIB = 1 << 20
ESP_MIB = 8
ROOT_TYPE = "8304"           # Linux x86-64 root (/)
#: Fixed identifiers and times, so two versions differ only where their content does.
DISK_GUID = "6d6c6162-0000-4000-8000-000000000001"
ESP_GUID = "6d6c6162-0000-4000-8000-0000000000e5"
ROOT_GUID = "6d6c6162-0000-4000-8000-000000000002"
USR_B_GUID = "6d6c6162-0000-4000-8000-000000000003"
FS_UUID = "6d6c6162-0000-4000-8000-0000000000f5"
FIXED_TIME = 1700000000
#: tool -> Debian package, for a clear error when one is missing.
TOOLS = {"sgdisk": "gdisk", "mkfs.ext4": "e2fsprogs", "debugfs": "e2fsprogs"}


class ImageError(Exception):
    """A tool is missing or failed while building an image."""


def _tool(name: str) -> str:
    path = shutil.which(name) or (f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists()
                                  else None)
    if path is None:
        raise ImageError(f"{name} is not installed: install the Debian package {TOOLS[name]}")
    return path


def _run(cmd: list[str], env: dict | None = None) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    if done.returncode:
        raise ImageError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()}")


def os_release(version: str, name: str = "Metalcast Lab OS") -> str:
    return (f'NAME="{name}"\nID=metalcast-lab\nVERSION_ID={version}\n'
            f'VERSION="{version}"\nPRETTY_NAME="{name} {version}"\n')


def build_image(path: Path, version: str, size_mib: int = 64,
                files: dict[str, bytes] | None = None, label: str = "lab-root") -> Path:
    """Write a bootable-looking disk image with OS ``version`` to ``path``.

    ``files`` adds more files to the root file system (relative path -> bytes),
    e.g. payload that makes two versions differ by a known amount.
    """
    if size_mib < ESP_MIB + 16:
        raise ImageError(f"size_mib must be at least {ESP_MIB + 16}")
    path = Path(path)
    path.unlink(missing_ok=True)
    with open(path, "wb") as f:
        f.truncate(size_mib * MIB)          # sparse
    _run([_tool("sgdisk"), "-n", f"1:1MiB:+{ESP_MIB}MiB", "-t", "1:EF00", "-c", "1:ESP",
          "-n", "2:0:0", "-t", f"2:{ROOT_TYPE}", "-c", "2:root", "-U", DISK_GUID,
          "-u", f"1:{ESP_GUID}", "-u", f"2:{ROOT_GUID}", str(path)])
    _number, offset, size = disk.partitions(str(path))[1]
    _mkfs(path, offset, size, version, files, label)
    return path


def _mkfs(path: Path, offset: int, size: int, version: str,
          files: dict[str, bytes] | None, label: str) -> None:
    """An ext4 file system with ``/etc/os-release`` of ``version`` (and ``files``) in
    ``size`` bytes at ``offset`` of ``path``, made reproducibly (fixed UUID and times)."""
    with tempfile.TemporaryDirectory(prefix="virtlab-rootfs-") as root:
        etc = Path(root, "etc")
        etc.mkdir()
        (etc / "os-release").write_text(os_release(version))
        for name, data in (files or {}).items():
            target = Path(root, name)
            if Path(root).resolve() not in target.resolve().parents:
                raise ImageError(f"file {name!r} would land outside the image root")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        for item in sorted(Path(root).rglob("*")) + [Path(root)]:
            os.utime(item, (FIXED_TIME, FIXED_TIME), follow_symlinks=False)
        env = dict(os.environ, E2FSPROGS_FAKE_TIME=str(FIXED_TIME))
        _run([_tool("mkfs.ext4"), "-q", "-F", "-L", label, "-U", FS_UUID,
              "-E", f"offset={offset},hash_seed={FS_UUID}", "-d", root, str(path),
              f"{size // 1024}k"], env=env)


def build_rootfs(path: Path, version: str, size_mib: int = 32,
                 files: dict[str, bytes] | None = None, label: str = "USR") -> Path:
    """A bare ext4 file system image (no partition table) with OS ``version``: what an
    A/B update writes into a slot, as Flatcar's payload is the USR partition's bytes."""
    path = Path(path)
    path.unlink(missing_ok=True)
    with open(path, "wb") as f:
        f.truncate(size_mib * MIB)
    _mkfs(path, 0, size_mib * MIB, version, files, label)
    return path


def build_ab_image(path: Path, version: str, slot_mib: int = 32,
                   files: dict[str, bytes] | None = None) -> Path:
    """A Flatcar-shaped A/B disk: ESP, USR-A and USR-B (the CoreOS /usr type GRUB's
    gptprio picks among), version ``version`` in USR-A marked as a proven boot
    (priority 1, successful, as a fresh Flatcar install) and USR-B empty and unbootable."""
    path = Path(path)
    path.unlink(missing_ok=True)
    with open(path, "wb") as f:
        f.truncate((1 + ESP_MIB + 2 * slot_mib + 1) * MIB)
    _run([_tool("sgdisk"), "-n", f"1:1MiB:+{ESP_MIB}MiB", "-t", "1:EF00", "-c", "1:ESP",
          "-n", f"2:0:+{slot_mib}MiB", "-t", f"2:{slots.COREOS_USR_TYPE}", "-c", "2:USR-A",
          "-n", f"3:0:+{slot_mib}MiB", "-t", f"3:{slots.COREOS_USR_TYPE}", "-c", "3:USR-B",
          "-U", DISK_GUID, "-u", f"1:{ESP_GUID}", "-u", f"2:{ROOT_GUID}",
          "-u", f"3:{USR_B_GUID}", str(path)])
    _number, offset, size = disk.partitions(str(path))[1]
    _mkfs(path, offset, size, version, files, "USR")
    slots.SlotDisk(str(path)).set_attributes(2, priority=1, tries=0, successful=True)
    return path


def build_versions(directory: Path, versions=("1", "2"), size_mib: int = 64) -> dict[str, Path]:
    """One image per version (``lab-v<version>.img``): the demo's update pair."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    return {v: build_image(directory / f"lab-v{v}.img", v, size_mib) for v in versions}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m virtlab.images", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", type=Path)
    parser.add_argument("--version", required=True)
    parser.add_argument("--size-mib", type=int, default=64)
    args = parser.parse_args(argv)
    try:
        build_image(args.output, args.version, args.size_mib)
    except ImageError as exc:
        print(f"virtlab.images: {exc}", file=sys.stderr)
        return 1
    print(args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
