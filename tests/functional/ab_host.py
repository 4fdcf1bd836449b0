"""A simulated installed host for the A/B update tests: a GPT disk image with USR-A and
USR-B (sgdisk), the files the engine reads (os-release, machine-id, boot id, kernel
command line, update.conf), and a "reboot" that does what GRUB's gptprio does
(``SlotDisk.boot_next``) and then boots the chosen slot's version. The engine runs as
the real ``metalcast-agent update ...`` process.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

from ramdisk_agent.host.slots import COREOS_USR_TYPE, SlotDisk
from ramdisk_agent.host.update.slotdev import SlotLayout

MIB = 1 << 20


def cgpt_bits(disk: str, part: int) -> tuple[int, int, int, str]:
    """(priority, tries, successful, ``cgpt show -A``) as the real cgpt reads them."""
    def show(flag: str) -> str:
        return subprocess.run(["cgpt", "show", flag, "-i", str(part), disk], check=True,
                              capture_output=True, text=True).stdout.strip()
    return int(show("-P")), int(show("-T")), int(show("-S")), show("-A")


def make_image(path: Path, size: int, seed: int) -> Path:
    """``size`` bytes: a random-looking header per MiB and zeros (compressible, like a
    real filesystem image), different per ``seed``."""
    with open(path, "wb") as out:
        for mib in range(size // MIB):
            head = hashlib.sha256(f"{seed}-{mib}".encode()).digest() * 128
            out.write(head + bytes(MIB - len(head)))
    return path


def change(old: Path, new: Path, seed: int, every: int = 50) -> Path:
    """``old`` with one 4 KiB block per ``every`` changed (2 % by default)."""
    data = bytearray(old.read_bytes())
    for block in range(0, len(data) // 4096, every):
        data[block * 4096:block * 4096 + 32] = hashlib.sha256(f"{seed}-{block}".encode()).digest()
    new.write_bytes(bytes(data))
    return new


class Host:
    def __init__(self, root: Path, server: str, slot_size: int, image: Path, version: str,
                 key_pem: bytes):
        self.root, self.server, self.slot_size = root, server, slot_size
        root.mkdir(parents=True, exist_ok=True)
        self.disk = str(root / "disk.img")
        with open(self.disk, "wb") as handle:
            handle.truncate(slot_size * 2 + 4 * MIB)
        mib = slot_size // MIB
        subprocess.run(["sgdisk", "-o", "-n1:2048:+1M", "-t1:EF00",
                        f"-n3:0:+{mib}M", f"-t3:{COREOS_USR_TYPE}", "-c3:USR-A",
                        f"-n4:0:+{mib}M", f"-t4:{COREOS_USR_TYPE}", "-c4:USR-B", self.disk],
                       check=True, capture_output=True)
        self.gpt = SlotDisk(self.disk)
        self.gpt.set_attributes(3, priority=1, tries=0, successful=True)   # as installed
        self.versions: dict[str, str] = {}
        self.know(image, version)
        self.refs = {ref.number: ref for ref in SlotLayout(self.disk, ("USR-A", "USR-B")).refs()}
        self.put(3, image)
        (root / "key.pem").write_bytes(key_pem)
        (root / "machine-id").write_text(uuid.uuid4().hex + "\n")
        self.marker = root / "rebooted"
        self.boot(3, version)
        self.settings = {
            "SERVER": server + "/v1/update/", "GROUP": "stable", "DISK": self.disk,
            "UPDATE_KEY": str(root / "key.pem"), "MACHINE_ID_FILE": str(root / "machine-id"),
            "BOOT_ID_FILE": str(root / "boot_id"), "CMDLINE_FILE": str(root / "cmdline"),
            "OS_RELEASE_FILE": str(root / "os-release"), "STATE_DIR": str(root / "state"),
            "REBOOT_REQUIRED_FILE": str(root / "reboot-required"),
            "REBOOT_COMMAND": f"touch {self.marker}", "HEALTH_WINDOW": "1",
            "HEALTH_COMMANDS": f"test -e {root / 'healthy'}",
            "TOKEN_FILE": str(root / "token.json")}
        (root / "healthy").touch()

    def detach_loops(self) -> None:
        """Detach loop devices over this disk that a killed engine left (test teardown)."""
        listed = subprocess.run(["losetup", "-n", "-O", "NAME", "-j", self.disk],
                                capture_output=True, text=True, check=False).stdout
        for device in listed.split():
            subprocess.run(["losetup", "-d", device], capture_output=True, check=False)

    def token(self, node: str, token: str) -> None:
        """The host agent's token file (0600), as 'metalcast host token' writes it."""
        path = self.root / "token.json"
        path.write_text(json.dumps({"token": token, "node_uuid": node}))
        path.chmod(0o600)

    def know(self, image: Path, version: str) -> None:
        self.versions[hashlib.sha256(image.read_bytes()).hexdigest()] = version

    def put(self, number: int, image: Path) -> None:
        ref = self.refs[number]
        with open(self.disk, "r+b") as disk:
            disk.seek(ref.offset)
            disk.write(image.read_bytes())

    def slot_bytes(self, number: int, length: int | None = None) -> bytes:
        ref = self.refs[number]
        with open(self.disk, "rb") as disk:
            disk.seek(ref.offset)
            return disk.read(length or ref.size)

    def slot_sha(self, number: int) -> str:
        return hashlib.sha256(self.slot_bytes(number)).hexdigest()

    def boot(self, number: int, version: str) -> None:
        guid = self.refs[number].guid
        (self.root / "cmdline").write_text(f"BOOT_IMAGE=/flatcar/vmlinuz-a mount.usr=PARTUUID="
                                           f"{guid} console=ttyS0\n")
        (self.root / "os-release").write_text(f'NAME="Flatcar"\nVERSION={version}\n')
        (self.root / "boot_id").write_text(str(uuid.uuid4()) + "\n")
        self.running = version

    def reboot(self) -> int:
        """Firmware's choice (gptprio, a try consumed), then that slot's version boots."""
        choice = self.gpt.boot_next()
        assert choice is not None, "no bootable slot"
        version = self.versions.get(self.slot_sha(choice.number), "garbage")
        self.boot(choice.number, version)
        return choice.number

    def conf(self, **settings: str) -> str:
        self.settings.update(settings)
        path = self.root / "update.conf"
        path.write_text("".join(f'{key}="{value}"\n' for key, value in self.settings.items()))
        return str(path)

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "ramdisk_agent.cli", "update", *args, "--config",
                self.conf()]

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(self.command(*args), capture_output=True, text=True,
                              timeout=300, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        if check and done.returncode != 0:
            raise AssertionError(f"update {' '.join(args)} exited {done.returncode}:\n"
                                 f"{done.stdout}\n{done.stderr}")
        return done
