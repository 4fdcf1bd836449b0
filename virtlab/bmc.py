"""A virtual IPMI BMC on pyghmi's server side, many per process, state on disk.

Each ``VirtualBmc`` answers IPMI 2.0 (RMCP+, cipher suite 3) on one UDP port of
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
import sys
import threading
import uuid as uuidlib
from pathlib import Path

from pyghmi.ipmi import bmc as pyghmi_bmc
from pyghmi.ipmi.private import constants
from pyghmi.ipmi.private import serversession
from pyghmi.ipmi.private import session as ipmisession

from virtlab.state import BootOverride, StateFile

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

# RMCP+ status codes (IPMI 2.0 table 13-15).
RMCP_UNAUTHORIZED_NAME = 0x0D
RMCP_NO_CIPHER_SUITE_MATCH = 0x11
RMCP_ILLEGAL_PARAMETER = 0x12

#: (authentication, integrity, confidentiality) algorithms of cipher suite 3:
#: RAKP-HMAC-SHA1, HMAC-SHA1-96, AES-CBC-128 -- all pyghmi's server implements.
SUITE_3 = (1, 1, 1)

#: Addresses that would expose the BMC on every interface.
WILDCARD_ADDRESSES = ("", "::", "0.0.0.0")


class Suite3Session(serversession.ServerSession):
    """pyghmi's server session, made to refuse what it cannot speak.

    Quirk: pyghmi's ``ServerSession`` answers every RMCP+ Open Session Request as
    if cipher suite 3 (SHA-1) had been proposed. The pyghmi *client* proposes
    suite 17 (SHA-256) first, takes that answer without checking it, and then
    dies in RAKP2 with ``struct.error`` (it expects a 32-byte SHA-256 HMAC and
    gets a 20-byte SHA-1 one). A real BMC answers a proposal it cannot honour
    with status 0x11 "no cipher suite match"; the pyghmi client reacts to a
    non-zero status on its SHA-256 attempt by retrying with SHA-1, and ipmitool
    proposes suite 3 itself, so both get a session.
    """

    def create_open_session_response(self, request):
        request = bytearray(request)
        if len(request) < 32:
            return bytearray([request[0] if request else 0, RMCP_ILLEGAL_PARAMETER, 0, 0]) \
                + request[4:8]
        proposal = (request[12], request[20], request[28])
        if proposal != SUITE_3:
            LOG.debug("BMC %s: refusing cipher proposal %s (only suite 3)",
                      self.bmc.port, proposal)
            self.clientsessionid = request[4:8]
            return bytearray([request[0], RMCP_NO_CIPHER_SUITE_MATCH, 0, 0]) + request[4:8]
        return super().create_open_session_response(request)

    def _got_rakp1(self, data):
        # Quirk: pyghmi's server silently drops RAKP1 for an unknown user name,
        # so clients only see a timeout. A real BMC answers "unauthorized name",
        # which tells the operator the user name is wrong.
        length = data[27]
        name = bytes(data[28:28 + length]).decode("utf-8", "replace")
        if length and self.authdata.get(name) is None:
            LOG.info("BMC %s: unknown user %r", self.bmc.port, name)
            self.send_payload(bytearray([data[0], RMCP_UNAUTHORIZED_NAME, 0, 0])
                              + self.clientsessionid,
                              constants.payload_types["rakp2"], retry=False)
            return
        super()._got_rakp1(data)


def _is_open_session_request(data: bytes) -> bool:
    """An RMCP+ Open Session Request (IPMI 2.0 payload type 0x10), sessionless."""
    return (len(data) >= 22 and data[0] == 6 and data[2:4] == b"\xff\x07"
            and data[4] == 6 and data[5] == 0x10)


class VirtualBmc(pyghmi_bmc.Bmc):
    """One simulated machine's BMC: power and boot state, saved on every change."""

    def __init__(self, state_dir: Path, username: str, password: str,
                 address: str = "127.0.0.1", port: int = 0):
        if address in WILDCARD_ADDRESSES:
            raise ValueError(f"refusing to bind the wildcard address {address!r}; "
                             "give the one address the BMC should answer on")
        # pyghmi's default address '::' would bind every interface: always pass ours.
        super().__init__({username: password}, port=port, address=address)
        # Port 0 lets the kernel choose; pyghmi routes session packets by self.port.
        self.port = self.serversocket.getsockname()[1]
        self.address = address
        self.store = StateFile(Path(state_dir) / f"bmc-{self.port}.json")
        self.state = self.store.load()
        self.uuid = uuidlib.UUID(self.state.uuid)

    # -- sessions ----------------------------------------------------------
    def sessionless_data(self, data, sockaddr):
        if _is_open_session_request(data):
            Suite3Session(self.authdata, self.kg, sockaddr, self.serversocket,
                          bytearray(data)[16:], self.uuid, bmc=self)
            return
        super().sessionless_data(data, sockaddr)

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
        # One event-loop thread serves every BMC of the process: no locking needed.
        for key, value in values.items():
            setattr(self.state, key, value)
        self.store.save(self.state)
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


def serve(stop: threading.Event, tick: float = 0.2) -> None:
    """Answer every VirtualBmc of this process until ``stop`` is set.

    pyghmi's ``Bmc.listen`` is a classmethod looping forever over one shared
    event loop that serves every instance's socket; this is the same loop with
    a way out.
    """
    while not stop.is_set():
        try:
            ipmisession.Session.wait_for_rsp(tick)
        except Exception:  # noqa: BLE001 - one bad packet must not stop every BMC
            LOG.exception("IPMI event loop iteration failed")


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
    serve(stop)
    LOG.info("virtlab.bmc %d stopping (%d BMCs)", os.getpid(), len(bmcs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
