"""A virtual IPMI BMC on pyghmi's server side, many per process, state on disk.

Each ``VirtualBmc`` answers IPMI 2.0 (RMCP+, cipher suites 3 and 17) on one UDP port of
one address: power status/on/off/soft off/reset/cycle, chassis status, and the
boot-flags parameter with its persistent and UEFI bits. Its machine state lives
in ``<state-dir>/bmc-<port>.json`` (see ``virtlab.state``), so a restarted BMC
on the same port answers as before. Run several from one process with::

    python -m virtlab.bmc --count 4 --base-port 6230 --state-dir /tmp/lab \\
        --username admin --password password

It prints one ready line (``VIRTLAB-BMC-READY {json}``) and exits on SIGTERM.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import struct
import sys
import threading
import uuid as uuidlib
from pathlib import Path

from pyghmi.ipmi import bmc as pyghmi_bmc

from virtlab import rmcp_server
from virtlab.state import BootOverride, MachineState, StateFile

LOG = logging.getLogger(__name__)

READY_PREFIX = "VIRTLAB-BMC-READY "

#: Boot-flags device selector (parameter 5, data byte 2, bits 5:2) -> our name.
SELECTOR_TO_DEVICE = {0: "none", 1: "pxe", 2: "disk", 3: "safe", 5: "cdrom",
                      6: "bios", 15: "floppy"}
DEVICE_TO_SELECTOR = {name: sel for sel, name in SELECTOR_TO_DEVICE.items()}

# Boot-flags data byte 1.
FLAG_VALID, FLAG_PERSISTENT, FLAG_UEFI = 0x80, 0x40, 0x20

# IPMI completion codes we answer with.
CC_OK = 0x00
CC_PARAM_UNSUPPORTED = 0x80
CC_REQUEST_LENGTH = 0xC7
CC_INVALID_DATA = 0xCC
CC_NOT_IN_THIS_STATE = 0xD5

#: Cipher suites listed to clients -> (authentication, integrity, confidentiality)
#: algorithm numbers; rmcp_server.SUITES implements exactly these.
CIPHER_SUITES = {3: (1, 1, 1), 17: (3, 4, 1)}

#: Addresses that would expose the BMC on every interface.
WILDCARD_ADDRESSES = ("", "::", "0.0.0.0")


class VirtualBmc(pyghmi_bmc.Bmc):
    """One simulated machine's BMC: power and boot state, saved on every change."""

    def __init__(self, state_dir: Path, username: str, password: str,
                 address: str = "127.0.0.1", port: int = 0):
        if address in WILDCARD_ADDRESSES:
            raise ValueError(f"refusing to bind the wildcard address {address!r}; "
                             "give the one address the BMC should answer on")
        rmcp_server.disable_pyghmi_io_thread()  # PacketLoop reads our sockets
        # pyghmi's default address '::' would bind every interface: always pass ours.
        super().__init__({username: password}, port=port, address=address)
        self.sessions = rmcp_server.SessionTable()
        # Port 0 lets the kernel choose; pyghmi routes session packets by self.port.
        self.port = self.serversocket.getsockname()[1]
        self.address = address
        self.store = StateFile(Path(state_dir) / f"bmc-{self.port}.json")
        self._state = self.store.load()
        self.uuid = uuidlib.UUID(self._state.uuid)

    @property
    def state(self) -> MachineState:
        """The machine's state, re-read when the virtual lab changed the file (a
        simulated machine that powered itself off, see virtlab.machine)."""
        self._state = self.store.refresh(self._state)
        return self._state

    # -- sessions ----------------------------------------------------------
    def sessionless_data(self, data, sockaddr):
        """Packets outside a session (rmcp_server.route sorted them out); an Open
        Session Request starts a session that replaces the client's old one."""
        if rmcp_server.is_open_session_request(data):
            session = rmcp_server.RmcpSession(
                self.authdata, self.kg, sockaddr, self.serversocket,
                bytearray(data)[16:], self.uuid, bmc=self)
            self.sessions.put(sockaddr, session)
            return
        super().sessionless_data(data, sockaddr)

    def send_cipher_suites(self, myaddr, mylun, clientaddr, clientlun, clientseq, data,
                           sockaddr):
        """Get Channel Cipher Suites: pyghmi's lists suite 3 only; we speak 17 too.
        ipmitool picks the best listed suite when not given ``-C``."""
        records = b"".join(bytes([0xC0, suite, auth, 0x40 | integ, 0x80 | conf])
                           for suite, (auth, integ, conf) in CIPHER_SUITES.items())
        ipmi_header = bytes([clientaddr, clientlun | (7 << 2)])
        body = bytes([myaddr, mylun | clientseq << 2, 0x54, 0x00, 0x01]) + records
        message = (ipmi_header + bytes([_checksum(ipmi_header)]) + body
                   + bytes([_checksum(body)]))
        packet = (b"\x06\x00\xff\x07\x06\x00" + bytes(8)
                  + struct.pack("<H", len(message)) + message)
        self.serversocket.sendto(packet, sockaddr)

    # -- power ---------------------------------------------------------------
    def get_power_state(self):
        return self.state.power

    def power_on(self):
        if self.state.power != "on":
            self._boot()
        return CC_OK

    def power_off(self):
        self._change("power off", power="off")
        return CC_OK

    def power_shutdown(self):
        # No operating system to ask: the simulated machine complies at once.
        self._change("soft power off", power="off")
        return CC_OK

    def power_reset(self):
        if self.state.power != "on":
            return CC_NOT_IN_THIS_STATE  # IPMI: reset/cycle of a machine that is off
        self._boot()
        return CC_OK

    def power_cycle(self):
        return self.power_reset()

    def pulse_diag(self):
        return CC_OK if self.state.power == "on" else CC_NOT_IN_THIS_STATE

    def cold_reset(self):
        return CC_OK

    def get_system_guid(self):
        return self.uuid

    def _boot(self) -> None:
        """Power on (or reset): the machine boots, consuming a one-time override."""
        boot = self.state.boot
        device = boot.device if boot.device != "none" else "disk"
        values = dict(power="on", boots=self.state.boots + 1, last_boot_device=device,
                      last_boot_uefi=boot.uefi, last_power_event="ipmi")
        if boot.device != "none" and not boot.persistent:
            values["boot"] = BootOverride()
        self._change(f"boot from {device}", **values)

    def _change(self, what: str, **values) -> None:
        # The lab's firmware writes the file too: read-modify-write under its lock.
        def apply(state: MachineState) -> None:
            for key, value in values.items():
                setattr(state, key, value)
        self._state = self.store.update(apply)
        LOG.info("BMC %s:%s: %s", self.address, self.port, what)

    # -- chassis status and boot options --------------------------------------
    def get_chassis_status(self, session):
        # Byte 1: bit 0 power on, bits 6:5 restore policy (00 = stay off).
        # Byte 2: bit 4 "last power on via IPMI command".
        power = 1 if self.state.power == "on" else 0
        last = 0x10 if self.state.last_power_event == "ipmi" else 0
        session.send_ipmi_response(data=[power, last, 0])

    def get_system_boot_options(self, request, session):
        # Overrides pyghmi's, which always reports "valid, next boot only, legacy".
        if (request["data"][0] & 0x7F) != 5:
            return session.send_ipmi_response(code=CC_PARAM_UNSUPPORTED)
        boot = self.state.boot
        flags = 0
        if boot.device != "none":
            flags = (FLAG_VALID | (FLAG_PERSISTENT if boot.persistent else 0)
                     | (FLAG_UEFI if boot.uefi else 0))
        selector = DEVICE_TO_SELECTOR[boot.device] << 2
        session.send_ipmi_response(data=[1, 5, flags, selector, 0, 0, 0])

    def set_system_boot_options(self, request, session):
        # Overrides pyghmi's, which drops the persistent and UEFI bits.
        data = request["data"]
        param = data[0] & 0x7F
        if param in (0, 3, 4):  # set-in-progress, valid-bit clearing, boot info ack
            return session.send_ipmi_response()
        if param != 5:
            return session.send_ipmi_response(code=CC_PARAM_UNSUPPORTED)
        if len(data) < 3:
            return session.send_ipmi_response(code=CC_REQUEST_LENGTH)
        override = _parse_boot_flags(data[1], data[2])
        if override is None:
            return session.send_ipmi_response(code=CC_INVALID_DATA)
        self._change(f"boot device {override.device} (persistent={override.persistent}, "
                     f"uefi={override.uefi})", boot=override)
        session.send_ipmi_response()


def _checksum(data: bytes) -> int:
    """IPMI message checksum: two's complement of the byte sum."""
    return -sum(data) & 0xFF


def _parse_boot_flags(flags: int, device_byte: int) -> BootOverride | None:
    """Boot-flags bytes 1 and 2 -> the override; None for an unknown device."""
    if not flags & FLAG_VALID:
        return BootOverride()  # valid bit clear: no override any more
    device = SELECTOR_TO_DEVICE.get((device_byte >> 2) & 0x0F)
    if device is None:
        return None
    if device == "none":
        return BootOverride()
    return BootOverride(device, bool(flags & FLAG_PERSISTENT), bool(flags & FLAG_UEFI))


def serve(bmcs: list[VirtualBmc], stop: threading.Event, tick: float = 0.2) -> None:
    """Answer every BMC of this process until ``stop`` is set.

    pyghmi's ``Bmc.listen`` loops forever in pyghmi's IO thread, whose cost per
    packet grows with the number of sockets; ``PacketLoop`` (epoll) replaces it.
    """
    loop = rmcp_server.PacketLoop()
    for bmc in bmcs:
        loop.add(bmc)
    loop.run(stop, tick)


def plan_ports(count: int, base_port: int, ports: str | None) -> list[int]:
    """The ports to bind: an explicit list, base..base+count-1, or count x 0."""
    if ports:
        return [int(p) for p in ports.split(",") if p.strip()]
    if base_port == 0:
        return [0] * count
    return list(range(base_port, base_port + count))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m virtlab.bmc", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--base-port", type=int, default=6230,
                        help="first UDP port; 0 lets the kernel choose each port")
    parser.add_argument("--ports", help="comma-separated ports (instead of --count/--base-port)")
    parser.add_argument("--address", default="127.0.0.1")
    parser.add_argument("--state-dir", required=True, type=Path)
    parser.add_argument("--username", default="admin")
    parser.add_argument("--password", default="password")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        bmcs = [VirtualBmc(args.state_dir, args.username, args.password, args.address, port)
                for port in plan_ports(args.count, args.base_port, args.ports)]
    except (OSError, ValueError) as exc:
        print(f"virtlab.bmc: cannot start: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    ready = {"pid": os.getpid(), "address": args.address, "ports": [b.port for b in bmcs],
             "state_dir": str(args.state_dir)}
    print(READY_PREFIX + json.dumps(ready), flush=True)
    serve(bmcs, stop)
    LOG.info("virtlab.bmc %d stopping (%d BMCs)", os.getpid(), len(bmcs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
