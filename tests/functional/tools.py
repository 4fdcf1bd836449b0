"""One place for "this test needs tool X": the path, or a clear failure naming the package.

The bar says a test whose peer is missing must FAIL (never skip) and say which Debian
package to install; every functional test module asks ``require(tool)`` here instead of
carrying its own copy of the check and its own piece of the tool -> package table.
"""
from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path

import pytest

#: tool -> the Debian package that ships it (scripts/install-system-packages).
TOOLS = {
    "busybox": "busybox-static", "chroot": "coreutils", "createrepo_c": "createrepo-c",
    "curl": "curl", "dig": "bind9-dnsutils", "dnf": "dnf", "dnsmasq": "dnsmasq-base",
    "ip": "iproute2", "ipmi_sim": "openipmi", "ipmitool": "ipmitool", "losetup": "mount",
    "mkfs.ext4": "e2fsprogs", "mount": "mount", "named": "bind9", "openssl": "openssl",
    "qemu-img": "qemu-utils", "qemu-io": "qemu-utils", "qemu-system-x86_64": "qemu-system-x86",
    "rpm": "rpm",
    "rpmbuild": "rpm", "sgdisk": "gdisk", "tftp": "tftp-hpa", "tsig-keygen": "bind9",
    # What the stock ironic-python-agent runs on its test machine (test_stock_ipa.py).
    "fuser": "psmisc", "hdparm": "hdparm", "hexdump": "bsdextrautils", "lsblk": "util-linux",
    "lscpu": "util-linux", "lshw": "lshw", "parted": "parted", "partprobe": "parted",
    "shred": "coreutils", "udevadm": "udev", "unshare": "util-linux",
    # The console's browser tests drive headless Chromium (test_console_browser.py).
    "chromium": "chromium", "chromedriver": "chromium-driver",
    # StarlingX's sw-patch in a private network namespace (test_sw_patch_peer.py).
    "nsenter": "util-linux",
}


def require(tool: str) -> str:
    """The tool's path; a clear failure (never a skip) when it is not installed.

    Also looks in /usr/sbin, which a non-root PATH often lacks (mkfs.ext4, sgdisk, ...).
    """
    path = shutil.which(tool)
    if path is None and Path(f"/usr/sbin/{tool}").exists():
        path = f"/usr/sbin/{tool}"
    if path is None:
        pytest.fail(f"{tool} is not installed: install the Debian package "
                    f"{TOOLS.get(tool, tool)} (run scripts/install-system-packages as root)")
    return path


def require_all(tools: Iterable[str]) -> None:
    """``require`` each tool, failing on the first one missing."""
    for tool in tools:
        require(tool)
