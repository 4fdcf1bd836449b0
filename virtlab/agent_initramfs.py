"""The deploy ramdisk for the QEMU labs: Debian's Python running the real metalcast-agent.

test-lab.md section 3, variant A: the host's Debian interpreter (/usr/bin/python3.11,
not the venv's pyenv build), its standard library without the parts an agent never
imports, and the ldd closure of the interpreter and of every extension module. On
top: the ``ramdisk_agent`` package from this checkout and the third-party packages
it imports (Flask, Werkzeug, cryptography, ... found by importing the agent in this
interpreter and copied from its site-packages: abi3/cp311 wheels run on Debian's
3.11), busybox, the virtio-net + virtio-blk modules and ``agent_init.sh`` as /init.

The archive is a newc cpio (virtlab.initramfs.NewcWriter, real mtimes so the
shipped .pyc files stay valid) piped through ``zstd -3``: ~17 MiB, built in a few
seconds and cached by a hash of everything that goes in, under the metalcast cache
directory (``$METALCAST_CACHE`` or ~/.cache/metalcast), so a CI run builds it once.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path, PurePosixPath

import ramdisk_agent
from virtlab.guest import Kernel, cache_root
from virtlab.initramfs import BUSYBOX, UDHCPC_SCRIPT, NewcWriter

PYTHON = Path("/usr/bin/python3.11")     # Debian's python3.11 package
STDLIB = Path("/usr/lib/python3.11")
INIT_SCRIPT = Path(__file__).with_name("agent_init.sh")
AGENT_ROOT = "opt/metalcast"             # PYTHONPATH in the guest
#: Standard library parts an agent never needs (test-lab.md section 3).
STDLIB_SKIP = frozenset({"test", "idlelib", "tkinter", "ensurepip", "lib2to3", "pydoc_data",
                         "distutils", "unittest", "venv", "sqlite3", "dbm", "curses",
                         "site-packages", "dist-packages", "turtledemo"})
#: Extension modules whose libraries (Berkeley DB, SQLite, Kerberos via NIS, ...) the
#: agent never needs; their names start with these.
DYNLOAD_SKIP = ("_dbm", "_gdbm", "_sqlite3", "_curses", "_tkinter", "nis", "_test",
                "xxlimited", "_xxtestfuzz", "_ctypes_test")
#: Imported while collecting the agent's closure but not needed in the ramdisk.
SITE_SKIP = frozenset({"_distutils_hack", "_pytest", "pytest"})
#: Merged /usr: the top-level names are symlinks, as on the host.
TOP_LINKS = {"bin": "usr/bin", "sbin": "usr/sbin", "lib": "usr/lib", "lib64": "usr/lib64"}
LDD_LINE = re.compile(r"(?:=>\s*)?(/\S+)\s+\(0x")


def build_agent_initramfs(kernel: Kernel, cache: Path | None = None) -> Path:
    """The cached ``agent-<hash>.cpio.zst`` for ``kernel``, built when missing."""
    _require_tools()
    files = collect_files(kernel)
    digest = _digest(files, kernel)
    output = (cache or cache_root()) / "initramfs" / f"agent-{digest[:16]}.cpio.zst"
    if output.is_file():
        return output
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(f"{output.name}.{os.getpid()}.partial")
    with open(partial, "wb") as out:
        zstd = subprocess.Popen(["zstd", "-3", "-T0", "-q", "-c"], stdin=subprocess.PIPE,
                                stdout=out)
        assert zstd.stdin is not None  # stdin=PIPE
        try:
            _write_archive(zstd.stdin, files, kernel)
        finally:
            zstd.stdin.close()
            if zstd.wait(120):
                partial.unlink(missing_ok=True)
                raise RuntimeError(f"zstd failed with status {zstd.returncode}")
    os.replace(partial, output)
    for stale in output.parent.glob("agent-*.cpio.zst"):
        if stale != output:  # an older build: the cache keeps one
            stale.unlink(missing_ok=True)
    return output


def _require_tools() -> None:
    for path, package in ((PYTHON, "python3.11"), (Path(BUSYBOX), "busybox-static")):
        if not path.exists():
            raise RuntimeError(f"{path} not found: install the Debian package {package}")
    for tool, package in (("zstd", "zstd"), ("ldd", "libc-bin")):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} not found: install the Debian package {package}")


def collect_files(kernel: Kernel) -> dict[str, Path]:
    """Archive path -> host file, for everything but /init and the generated files."""
    files: dict[str, Path] = {"usr/bin/python3.11": PYTHON, "usr/bin/busybox": Path(BUSYBOX)}
    _add_tree(files, STDLIB, "usr/lib/python3.11", skip=STDLIB_SKIP)
    for name in [n for n in files if n.startswith("usr/lib/python3.11/lib-dynload/")]:
        if PurePosixPath(name).name.startswith(DYNLOAD_SKIP):
            del files[name]
    package = Path(ramdisk_agent.__file__).parent
    _add_tree(files, package, f"{AGENT_ROOT}/ramdisk_agent")
    for path in third_party_paths():
        target = f"{AGENT_ROOT}/{path.name}"
        if path.is_dir():
            _add_tree(files, path, target)
        else:
            files[target] = path
    for module in (*kernel.modules, *kernel.block_modules):
        files[f"usr/lib/modules/{module.name}"] = module
    for library in _ldd_closure([p for p in files.values() if _is_elf_binary(p)]):
        files.setdefault(_archive_path(library), library)
    return files


#: Run in a fresh interpreter: import every ramdisk_agent module, print the files
#: of everything that got loaded (the test process itself has imported far more).
_CLOSURE_SCRIPT = """
import importlib, json, pkgutil, sys
import ramdisk_agent
for info in pkgutil.walk_packages(ramdisk_agent.__path__, "ramdisk_agent."):
    importlib.import_module(info.name)
print(json.dumps([getattr(m, "__file__", None) for m in list(sys.modules.values())]))
"""


def third_party_paths() -> list[Path]:
    """Top-level files/packages of site-packages that importing every
    ``ramdisk_agent`` module loads, plus their wheels' ``<name>.libs`` folders and
    ``.dist-info`` metadata (libraries may ask importlib.metadata for a version)."""
    result = subprocess.run([sys.executable, "-c", _CLOSURE_SCRIPT], capture_output=True,
                            text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(
                                Path(ramdisk_agent.__file__).parent.parent)})
    if result.returncode:
        raise RuntimeError(f"importing ramdisk_agent failed: {result.stderr.strip()}")
    site = Path(sysconfig.get_paths()["purelib"])
    found: set[Path] = set()
    for origin in filter(None, json.loads(result.stdout.splitlines()[-1])):
        if not Path(origin).is_relative_to(site):
            continue
        top = Path(origin).relative_to(site).parts[0]
        if top.split(".")[0] in SITE_SKIP or top.startswith("__editable__"):
            continue
        found.add(site / top)
        if (site / f"{top}.libs").is_dir():
            found.add(site / f"{top}.libs")
    owners = importlib.metadata.packages_distributions()
    for path in list(found):
        for dist in owners.get(path.name.split(".")[0], ()):
            found.update(site.glob(f"{re.sub('[-_.]+', '_', dist).lower()}-*.dist-info"))
    return sorted(found)


def _add_tree(files: dict[str, Path], root: Path, target: str,
              skip: frozenset[str] = frozenset()) -> None:
    for directory, subdirs, names in os.walk(root):
        relative = Path(directory).relative_to(root)
        subdirs[:] = sorted(d for d in subdirs
                            if not (relative == Path(".")
                                    and (d in skip or d.startswith("config-"))))
        for name in sorted(names):
            path = Path(directory) / name
            if path.exists():  # skips dangling symlinks
                files[str(PurePosixPath(target) / relative / name)] = path


def _is_elf_binary(path: Path) -> bool:
    return path.suffix == ".so" or ".so." in path.name or path.parent.name == "bin"


def _ldd_closure(binaries: list[Path]) -> set[Path]:
    """Shared libraries (and the loader) the binaries need, as ldd resolves them."""
    found: set[Path] = set()
    for chunk in range(0, len(binaries), 200):
        result = subprocess.run(["ldd", *map(str, binaries[chunk:chunk + 200])],
                                capture_output=True, text=True, timeout=120)
        for match in LDD_LINE.finditer(result.stdout):
            found.add(Path(match.group(1)))
    return found


def _archive_path(library: Path) -> str:
    """Where a library goes: its directory resolved (merged /usr), its own name kept,
    so /lib64/ld-linux-x86-64.so.2 lands in usr/lib64 and libc.so.6 keeps its soname."""
    return str(Path(os.path.realpath(library.parent)) / library.name).lstrip("/")


def _digest(files: dict[str, Path], kernel: Kernel) -> str:
    """Hash of what goes in: every file's name, size and mtime, plus the /init, the
    udhcpc script and this builder's source (editing either rebuilds the archive)."""
    digest = hashlib.sha256()
    for name in sorted(files):
        info = files[name].stat()
        digest.update(f"{name}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
    for text in (agent_init(kernel), UDHCPC_SCRIPT, Path(__file__).read_text()):
        digest.update(text.encode())
    return digest.hexdigest()


def agent_init(kernel: Kernel) -> str:
    names = " ".join(p.stem for p in (*kernel.modules, *kernel.block_modules))
    return INIT_SCRIPT.read_text().replace("@MODULES@", names).replace(
        "@AGENT_ROOT@", "/" + AGENT_ROOT)


def _write_archive(stream, files: dict[str, Path], kernel: Kernel) -> None:
    cpio = NewcWriter(stream)
    directories = {"dev", "proc", "sys", "tmp", "run", "root", "etc", "usr/sbin"}
    for name in files:
        parts = PurePosixPath(name).parts[:-1]
        directories.update("/".join(parts[:i]) for i in range(1, len(parts) + 1))
    for name in sorted(directories):
        cpio.directory(name)
    for link, target in TOP_LINKS.items():
        cpio.symlink(link, target)
    cpio.char_device("dev/console", 5, 1)
    cpio.char_device("dev/null", 1, 3)
    cpio.symlink("usr/bin/python3", "python3.11")
    for name, path in sorted(files.items()):
        info = path.stat()
        mode = 0o755 if info.st_mode & 0o111 else 0o644
        cpio.file(name, path.read_bytes(), mode, mtime=int(info.st_mtime))
    cpio.file("etc/udhcpc.script", UDHCPC_SCRIPT.encode(), 0o755)
    cpio.file("etc/hostname", b"metalcast-ramdisk\n")
    cpio.file("init", agent_init(kernel).encode(), 0o755)
    cpio.close()
