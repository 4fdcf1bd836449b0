"""virtlab's RMCP+ server against hand-built datagrams: retransmissions and
sessionless packets, deterministically (no timing involved).

A client that retransmits because an answer was slow must get the very same
answer again, and a sessionless request (Get Channel Authentication
Capabilities / Cipher Suites) from an address that has sessions must be
answered without touching them: pyghmi's server did neither (see
virtlab/rmcp_server.py). The real-client side of the same behaviour is in
test_ipmi_bmc.py (ipmitool and pyghmi against a frozen BMC process).
"""
from __future__ import annotations

import os
import socket
import struct

import pytest

from virtlab.launcher import start_bmcs, stop_bmcs

RMCP = b"\x06\x00\xff\x07"
SUITE_3 = bytes([0, 0, 0, 8, 1, 0, 0, 0, 1, 0, 0, 8, 1, 0, 0, 0, 2, 0, 0, 8, 1, 0, 0, 0])


def _checksum(data: bytes) -> int:
    return -sum(data) & 0xFF


def rmcpplus(payload_type: int, payload: bytes) -> bytes:
    """An unauthenticated IPMI 2.0 packet outside a session (session ID 0)."""
    return RMCP + bytes([6, payload_type]) + struct.pack("<IIH", 0, 0, len(payload)) + payload


def open_session_request(console_id: int, tag: int = 1) -> bytes:
    return rmcpplus(0x10, bytes([tag, 0, 0, 0]) + struct.pack("<I", console_id) + SUITE_3)


def rakp1(managed_id: bytes, user: bytes = b"admin", tag: int = 2) -> bytes:
    payload = (bytes([tag, 0, 0, 0]) + managed_id + os.urandom(16)
               + bytes([0x14, 0, 0, len(user)]) + user)
    return rmcpplus(0x12, payload)


def auth_capabilities() -> bytes:
    """Get Channel Authentication Capabilities, IPMI 1.5 framing, no session."""
    head = bytes([0x20, 0x06 << 2])
    body = bytes([0x81, 0x00, 0x38, 0x8E, 0x04])
    message = head + bytes([_checksum(head)]) + body + bytes([_checksum(body)])
    return RMCP + bytes([0]) + bytes(8) + bytes([len(message)]) + message


def cipher_suites() -> bytes:
    """Get Channel Cipher Suites, IPMI 2.0 framing, no session."""
    head = bytes([0x20, 0x06 << 2])
    body = bytes([0x81, 0x00, 0x54, 0x0E, 0x00, 0x80])
    return rmcpplus(0x00, head + bytes([_checksum(head)]) + body + bytes([_checksum(body)]))


class Client:
    """One UDP socket talking to several BMCs, as pyghmi's client does."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(10)

    def ask(self, port: int, packet: bytes) -> bytes:
        self.sock.sendto(packet, ("127.0.0.1", port))
        data, addr = self.sock.recvfrom(4096)
        assert addr[1] == port
        return data

    def close(self):
        self.sock.close()


@pytest.fixture
def lab(tmp_path):
    lab = start_bmcs(tmp_path / "bmc", count=2)
    client = Client()
    yield lab, client
    client.close()
    stop_bmcs(lab)


def managed_id(open_response: bytes) -> bytes:
    payload = open_response[16:]
    assert payload[1] == 0, f"open session refused: status 0x{payload[1]:02x}"
    return payload[8:12]


def test_a_retransmitted_open_session_request_gets_the_same_session(lab):
    bmcs, client = lab
    port = bmcs.ports[0]
    request = open_session_request(0xA0A2A3A4)
    first = client.ask(port, request)
    assert client.ask(port, request) == first
    # A new proposal (another console session ID) is a new session.
    other = client.ask(port, open_session_request(0xA0A2A3A5, tag=2))
    assert managed_id(other) != managed_id(first)


def test_a_retransmitted_rakp1_gets_the_same_rakp2(lab):
    bmcs, client = lab
    port = bmcs.ports[0]
    sid = managed_id(client.ask(port, open_session_request(0x01020304)))
    request = rakp1(sid)
    first = client.ask(port, request)
    assert first[5] & 0x3F == 0x13 and first[16 + 1] == 0  # RAKP 2, status OK
    assert client.ask(port, request) == first  # same Rc, same HMAC
    # An unknown user is told so ("unauthorized name"), not left to time out.
    refused = client.ask(port, rakp1(sid, user=b"nobody"))
    assert refused[5] & 0x3F == 0x13 and refused[16 + 1] == 0x0D


def test_sessionless_requests_leave_every_session_of_the_address_alone(lab):
    bmcs, client = lab
    requests = {port: open_session_request(0x1000 + port) for port in bmcs.ports}
    answers = {port: client.ask(port, requests[port]) for port in bmcs.ports}
    first = bmcs.ports[0]
    # pyghmi's server took this for a new client and dropped the sessions of this
    # address on *every* BMC of the process.
    capabilities = client.ask(first, auth_capabilities())
    assert capabilities[19] == 0x38 and capabilities[20] == 0  # command, completion code
    # ...and dropped this one (IPMI 2.0 framing, no session) without an answer.
    suites = client.ask(first, cipher_suites())
    assert suites[5] == 0 and suites[21] == 0x54 and suites[22] == 0
    for port in bmcs.ports:  # both sessions still there: retransmissions say so
        assert client.ask(port, requests[port]) == answers[port]
