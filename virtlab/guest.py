"""Guest artefacts for the QEMU labs: Debian's kernel and its virtio-net modules.

Nothing here is committed: the kernel package is fetched with apt (the ordinary
Debian client) into a cache outside the repository (``$METALCAST_CACHE``, else
``~/.cache/metalcast``) and only the few files the labs need are kept.
``linux-image-amd64`` is a metapackage whose ABI dependency changes with security
updates, so the real package name is read from ``apt-cache depends`` each time a
cache is built (test-lab.md, recommendations item 6).
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

META_PACKAGE = "linux-image-amd64"

#: The virtio-net stack in insmod order. Debian ships plain ``.ko`` files and the
#: extracted package has no modules.dep, so dependencies come first: with another
#: order insmod fails with "unknown symbol" (test-lab.md section 2).
NET_MODULES = ("failover", "net_failover", "virtio_ring", "virtio",
               "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci",
               "virtio_net")
#: What /dev/vda needs on top of the virtio core above (loaded after it).
BLOCK_MODULES = ("virtio_blk",)
#: ext4 (the A/B lab's slots and state partition, virtlab.ab_vm), in insmod order;
#: crc32c_generic first because ext4/jbd2 ask the crypto API for crc32c at mount.
FS_MODULES = ("crc16", "mbcache", "jbd2", "crc32c_generic", "ext4")


@dataclasses.dataclass(frozen=True)
class Kernel:
    """One extracted kernel: the bzImage iPXE boots and the modules /init loads."""

    abi: str
    vmlinuz: Path
    modules: tuple[Path, ...]  # in NET_MODULES (insmod) order
    block_modules: tuple[Path, ...] = ()  # BLOCK_MODULES, insmod after ``modules``
    fs_modules: tuple[Path, ...] = ()  # FS_MODULES, for initramfs that mount ext4


def cache_root() -> Path:
    """Where downloaded and built guest artefacts live (never the repository)."""
    configured = os.environ.get("METALCAST_CACHE")
    root = Path(configured) if configured else Path.home() / ".cache" / "metalcast"
    root.mkdir(parents=True, exist_ok=True)
    return root


def kernel_package() -> str:
    """The ABI package ``linux-image-amd64`` depends on now, e.g. linux-image-6.1.0-56-amd64."""
    name = _depends()
    if name is None:  # apt lists missing: fetch them once
        _apt_update()
        name = _depends()
    if name is None:
        raise RuntimeError(f"apt-cache depends {META_PACKAGE} names no linux-image-6* "
                           "package: is this Debian with apt sources configured?")
    return name


def _apt_update() -> None:
    subprocess.run(["apt-get", "update", "-q"], check=True, capture_output=True, timeout=300)


def _depends() -> str | None:
    result = subprocess.run(["apt-cache", "depends", META_PACKAGE], capture_output=True,
                            text=True, timeout=60)
    for line in result.stdout.splitlines():
        key, _, value = line.strip().partition(": ")
        if key == "Depends" and value.startswith("linux-image-6"):
            return value.strip()
    return None


def debian_kernel(root: Path | None = None, package: str | None = None) -> Kernel:
    """The cached kernel (downloading and extracting it on first use).

    A kernel cached under an older ABI is still used when the current one cannot
    be named (no apt lists, offline), so a warm cache never needs the network."""
    cached = sorted(((root or cache_root()) / "kernel").glob("*/vmlinuz"))
    try:
        package = package or kernel_package()
    except (OSError, subprocess.SubprocessError, RuntimeError):
        if not cached:
            raise
        package = "linux-image-" + cached[-1].parent.name
    abi = package.removeprefix("linux-image-")
    target = (root or cache_root()) / "kernel" / abi
    kernel = _kernel_in(target, abi)
    if _complete(kernel):
        return kernel
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as work:
        staging = Path(work) / abi
        _download_extract(package, abi, Path(work), staging)
        if not _complete(kernel):  # else a parallel run just finished it
            shutil.rmtree(target, ignore_errors=True)
            staging.rename(target)  # atomic: a half-built cache is never seen
    return kernel


def _complete(kernel: Kernel) -> bool:
    """Every file of ``kernel`` is there (a cache from before BLOCK_MODULES is not)."""
    return all(path.is_file() for path in (kernel.vmlinuz, *kernel.modules,
                                           *kernel.block_modules, *kernel.fs_modules))


def _kernel_in(directory: Path, abi: str) -> Kernel:
    return Kernel(abi=abi, vmlinuz=directory / "vmlinuz",
                  modules=tuple(directory / "modules" / f"{name}.ko"
                                for name in NET_MODULES),
                  block_modules=tuple(directory / "modules" / f"{name}.ko"
                                      for name in BLOCK_MODULES),
                  fs_modules=tuple(directory / "modules" / f"{name}.ko"
                                   for name in FS_MODULES))


def _download_extract(package: str, abi: str, work: Path, staging: Path) -> None:
    """apt-get download the .deb into ``work`` and copy vmlinuz + NET_MODULES out."""
    download = ["apt-get", "download", "-q", package]
    if subprocess.run(download, cwd=work, capture_output=True, timeout=600).returncode:
        _apt_update()  # stale lists name a .deb the mirror no longer has
        result = subprocess.run(download, cwd=work, capture_output=True, text=True,
                                timeout=600)
        if result.returncode:
            raise RuntimeError(f"apt-get download {package} failed: {result.stderr.strip()}")
    deb = next(work.glob(f"{package}_*.deb"))
    wanted = {f"./boot/vmlinuz-{abi}": staging / "vmlinuz"}
    (staging / "modules").mkdir(parents=True)
    dpkg = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)],
                            stdout=subprocess.PIPE)
    assert dpkg.stdout is not None  # stdout=PIPE
    try:
        with tarfile.open(fileobj=dpkg.stdout, mode="r|") as tar:
            for member in tar:
                destination = wanted.get(member.name) or _module_target(member, staging)
                if destination is not None and member.isfile():
                    source = tar.extractfile(member)
                    assert source is not None  # a regular file
                    with source, open(destination, "wb") as out:
                        shutil.copyfileobj(source, out)
    finally:
        dpkg.stdout.close()
        dpkg.wait(60)
    deb.unlink()
    extracted = _kernel_in(staging, abi)
    missing = [str(p) for p in (*extracted.modules, *extracted.block_modules,
                                *extracted.fs_modules, staging / "vmlinuz")
               if not p.is_file()]
    if missing:
        raise RuntimeError(f"{package} lacks {', '.join(missing)}")


def _module_target(member: tarfile.TarInfo, staging: Path) -> Path | None:
    name = Path(member.name)
    if ("/kernel/" in member.name and name.suffix == ".ko"
            and name.stem in NET_MODULES + BLOCK_MODULES + FS_MODULES):
        return staging / "modules" / name.name
    return None
