"""Real peers of the network boot tests: curl (HTTP and tftp://), tftp-hpa, iPXE binaries."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.functional.tools import require  # re-exported

#: boot loader file -> Debian package that provides it.
FILES = {"/usr/lib/ipxe/undionly.kpxe": "ipxe-qemu (or ipxe)",
         "/usr/lib/ipxe/snponly.efi": "ipxe-qemu (or ipxe)",
         "/usr/lib/ipxe/qemu/efi-virtio.rom": "ipxe-qemu"}


def require_file(path: str) -> Path:
    if not Path(path).is_file():
        pytest.fail(f"{path} is missing: install the Debian package {FILES[path]} "
                    "(run scripts/install-system-packages as root)")
    return Path(path)


def curl(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    """Run curl (never through a proxy) and return the completed process (bytes output)."""
    return subprocess.run([require("curl"), "--noproxy", "*", "-sS", *args],
                          capture_output=True, timeout=timeout)
