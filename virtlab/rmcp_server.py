"""RMCP+ plumbing for virtlab's BMCs: robust server sessions and an epoll packet loop.

pyghmi ships an IPMI *server* (``pyghmi.ipmi.bmc.Bmc`` + ``serversession``), but
it was written for one BMC per process and a patient client. With many BMCs
in one process, a loaded machine and clients that retransmit, four of its
habits made concurrent logins stall ("no response from RAKP 1/3", sessions
that stop answering). Each is replaced here:

1. **Handshake retransmissions were not idempotent.** A repeated Open Session
   Request made a new managed session ID, a repeated RAKP 1 a new random Rc,
   a repeated RAKP 3 a RAKP 4 sent with the session's integrity/encryption
   already on. A client that retransmitted because the first answer was slow
   (ipmitool waits ~1 s, pyghmi 0.5-1 s) then checked the *first* answer, which
   no longer matched the server's state, and the handshake failed or hung.
   Here the same request bytes always get the same answer bytes back.
2. **A sessionless packet from a known client address killed sessions.**
   pyghmi routes every packet from a client address that has a session to that
   session; "Get Channel Authentication Capabilities" (IPMI 1.5, session 0)
   then deletes *every* session of that client address, for all BMCs of the
   process. pyghmi's own client shares one UDP socket among up to 64 BMCs, so
   one re-login (after a slow RAKP answer) silently dropped up to 63 other live
   sessions; their next commands timed out, re-logged in, and dropped more:
   a cascade that stalled whole power-sync sweeps. "Get Channel Cipher Suites"
   (IPMI 2.0, session 0, unauthenticated) was just dropped. Here sessionless
   packets are answered as sessionless and touch no session.
3. **pyghmi's IO thread is O(BMCs) per packet.** It select()s over every socket
   of the process and then calls a non-blocking ``recvfrom`` on *each* one per
   wake-up (1000 BMCs: ~1000 syscalls + exceptions per packet), and select()
   cannot watch descriptors >= 1024 at all. ``PacketLoop`` uses epoll and reads
   only the sockets that are ready; pyghmi's IO thread is never started.
4. **Sessions were never forgotten.** Each BMC here keeps at most
   ``MAX_SESSIONS`` (oldest dropped first; a real BMC has a few slots too).
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import os
import selectors
import socket
import struct
import threading

from pyghmi.ipmi.private import constants, serversession
from pyghmi.ipmi.private import session as ipmisession

LOG = logging.getLogger(__name__)

# RMCP+ status codes (IPMI 2.0 table 13-15).
RMCP_UNAUTHORIZED_NAME = 0x0D
RMCP_NO_CIPHER_SUITE_MATCH = 0x11
RMCP_ILLEGAL_PARAMETER = 0x12

#: Cipher suites we speak: (authentication, integrity, confidentiality) algorithm
#: numbers -> (hash of RAKP and integrity, integrity/RAKP 4 check length).
#: pyghmi's server only implements suite 3 and hard-codes SHA-1; suite 17 is what
#: current BMCs and clients prefer (the pyghmi client proposes it first).
SUITES = {
    (1, 1, 1): (hashlib.sha1, 12),    # suite 3: RAKP-HMAC-SHA1, HMAC-SHA1-96, AES-CBC-128
    (3, 4, 1): (hashlib.sha256, 16),  # suite 17: RAKP-HMAC-SHA256, HMAC-SHA256-128, AES
}

#: RMCP+ payload types of the session handshake a client sends (IPMI 2.0 13-16).
OPEN_SESSION_REQUEST, RAKP1, RAKP3 = 0x10, 0x12, 0x14
HANDSHAKE = (OPEN_SESSION_REQUEST, RAKP1, RAKP3)
#: Payload-type byte flags: the packet is authenticated / encrypted.
AUTHENTICATED, PAYLOAD_TYPE_MASK = 0x40, 0x3F
#: Sessions each BMC keeps (one per client address); the oldest goes first.
MAX_SESSIONS = 64
#: Datagrams read from one socket before the loop looks at the others.
BATCH = 64
RECV_SIZE = 3000


def is_rmcp_ipmi(data: bytes | bytearray) -> bool:
    """An RMCP packet of class IPMI (what every IPMI-over-LAN packet is)."""
    return len(data) >= 16 and data[0] == 6 and data[2:4] == b"\xff\x07"


def is_open_session_request(data: bytes | bytearray) -> bool:
    """An RMCP+ Open Session Request (IPMI 2.0 payload type 0x10), sessionless."""
    return (len(data) >= 22 and is_rmcp_ipmi(data) and data[4] == 6
            and data[5] == OPEN_SESSION_REQUEST)


def is_sessionless(data: bytes | bytearray) -> bool:
    """Outside any session: every IPMI 1.5 packet we answer (channel authentication
    capabilities), or an unauthenticated IPMI 2.0 IPMI message (cipher suites)."""
    if data[4] != 6:
        return True
    return data[5] & PAYLOAD_TYPE_MASK == 0 and not data[5] & AUTHENTICATED


class RmcpSession(serversession.ServerSession):
    """pyghmi's server session with cipher suites 3 and 17, refusing what it cannot
    speak and answering retransmissions the way it answered the original (see the
    module docstring)."""

    def __init__(self, authdata, kg, clientaddr, netsocket, request, uuid, bmc):
        super().__init__(authdata, kg, clientaddr, netsocket, request, uuid, bmc)
        # ServerSession registered itself in pyghmi's class-wide routing table;
        # the BMC's own table routes here, so do not leave a stale entry behind.
        handlers = ipmisession.Session.bmc_handlers.get(clientaddr, {})
        handlers.pop(bmc.port, None)
        if not handlers:
            ipmisession.Session.bmc_handlers.pop(clientaddr, None)
        #: (payload type, request payload) -> the datagram we answered it with.
        self.answers = {(OPEN_SESSION_REQUEST, bytes(request)): self.netpacket}

    @property
    def established(self) -> bool:
        return bool(self.integrityalgo)  # set by _got_rakp3 once RAKP 3 checked out

    def receive(self, data: bytearray) -> None:
        """One datagram from this session's client (not sessionless, not a new
        Open Session Request: the BMC sorted those out)."""
        if data[4] != 6:
            return  # IPMI 1.5 sessions are not offered
        ptype = data[5] & PAYLOAD_TYPE_MASK
        if ptype not in HANDSHAKE:
            self._handle_ipmi2_packet(data)
            return
        key = (ptype, bytes(data[16:]))
        if key in self.answers:  # a retransmission: the same answer again
            ipmisession._io_sendto(self.socket, self.answers[key], self.sockaddr)
            return
        if self.established:
            LOG.debug("BMC %s: late handshake packet 0x%02x from %s ignored",
                      self.bmc.port, ptype, self.sockaddr)
            return
        before = getattr(self, "netpacket", None)
        self._handle_ipmi2_packet(data)
        if self.netpacket is not before:
            self.answers[key] = self.netpacket

    def create_open_session_response(self, request):
        # Quirk: pyghmi's ServerSession answers every Open Session Request as if
        # cipher suite 3 (SHA-1) had been proposed. The pyghmi *client* proposes
        # suite 17 (SHA-256) first, takes that answer without checking it, and
        # dies in RAKP2 with struct.error. We speak suites 3 and 17 and answer
        # any other proposal with 0x11 "no cipher suite match", as a real BMC.
        request = bytearray(request)
        if len(request) < 32:
            return bytearray([request[0] if request else 0, RMCP_ILLEGAL_PARAMETER, 0, 0]) \
                + request[4:8]
        proposal = (request[12], request[20], request[28])
        self.clientsessionid = request[4:8]
        if proposal not in SUITES:
            LOG.debug("BMC %s: refusing cipher proposal %s", self.bmc.port, proposal)
            return bytearray([request[0], RMCP_NO_CIPHER_SUITE_MATCH, 0, 0]) + request[4:8]
        self.currhashlib, self.currhashlen = SUITES[proposal]
        self.managedsessionid = os.urandom(4)
        self.privlevel = 4
        algorithms = bytearray()
        for kind, number in enumerate(proposal):
            algorithms += bytearray([kind, 0, 0, 8, number, 0, 0, 0])
        return (bytearray([request[0], 0, self.privlevel, 0]) + self.clientsessionid
                + self.managedsessionid + algorithms)

    def _hmac(self, key: bytes, data: bytes) -> bytes:
        return hmac.new(key, bytes(data), self.currhashlib).digest()

    def _got_rakp1(self, data):
        # As pyghmi's, with the negotiated hash instead of SHA-1. Quirk: pyghmi's
        # drops RAKP1 for an unknown user name, so clients only see a timeout; a
        # real BMC answers "unauthorized name", which tells the operator.
        length = data[27]
        if not length:
            return  # no anonymous login
        self.username = bytes(data[28:28 + length])
        password = self.authdata.get(self.username.decode("utf-8", "replace"))
        if password is None:
            LOG.info("BMC %s: unknown user %r", self.bmc.port, self.username)
            self.send_payload(bytearray([data[0], RMCP_UNAUTHORIZED_NAME, 0, 0])
                              + self.clientsessionid,
                              constants.payload_types["rakp2"], retry=False)
            return
        self.Rm, self.rolem = bytes(data[8:24]), data[24]
        self.maxpriv = self.rolem & 0b111
        self.Rc, self.uuiddata = os.urandom(16), self.uuid.bytes
        self.kuid = password.encode("utf-8")
        if self.kg is None:
            self.kg = self.kuid
        authcode = self._hmac(self.kuid, self.clientsessionid + self.managedsessionid
                              + self.Rm + self.Rc + self.uuiddata
                              + bytes([self.rolem, length]) + self.username)
        self.send_payload(bytearray([data[0], 0, 0, 0]) + self.clientsessionid + self.Rc
                          + self.uuiddata + authcode,
                          constants.payload_types["rakp2"], retry=False)

    def _got_rakp3(self, data):
        if not hasattr(self, "Rc") or data[1] != 0:
            return  # no RAKP 2 sent yet, or the client refused it
        who = bytes([self.rolem, len(self.username)]) + self.username
        expected = self._hmac(self.kuid, self.Rc + self.clientsessionid + who)
        if not hmac.compare_digest(expected, bytes(data[8:])):
            return  # wrong password: as pyghmi, no RAKP 4 (the client times out)
        self.sik = self._hmac(self.kg, self.Rm + self.Rc + who)
        self.k1 = self._hmac(self.sik, b"\x01" * 20)  # IPMI 2.0 13.32: Const1, 20 bytes
        self.aeskey = self._hmac(self.sik, b"\x02" * 20)[:16]
        self.localsid = struct.unpack("<I", self.managedsessionid)[0]
        self.ipmicallback = self.handle_client_request
        check = self._hmac(self.sik, self.Rm + self.managedsessionid + self.uuiddata)
        self.send_payload(bytearray([data[0], 0, 0, 0]) + self.clientsessionid
                          + check[:self.currhashlen],
                          constants.payload_types["rakp4"], retry=False)
        self.confalgo, self.integrityalgo = "aes", "hmac"
        self.sequencenumber = 1
        self.sessionid = struct.unpack("<I", bytes(self.clientsessionid))[0]


class SessionTable:
    """One BMC's sessions by client address, bounded (oldest evicted first)."""

    def __init__(self, limit: int = MAX_SESSIONS):
        self.limit = limit
        self._sessions: dict[tuple, RmcpSession] = {}

    def get(self, clientaddr) -> RmcpSession | None:
        return self._sessions.get(clientaddr)

    def put(self, clientaddr, session: RmcpSession) -> None:
        self._sessions.pop(clientaddr, None)
        self._sessions[clientaddr] = session
        while len(self._sessions) > self.limit:
            del self._sessions[next(iter(self._sessions))]

    def __len__(self) -> int:
        return len(self._sessions)


def route(bmc, data: bytes, clientaddr) -> None:
    """Hand one datagram to the BMC (sessionless, new session) or its session."""
    if not is_rmcp_ipmi(data):
        return
    packet = bytearray(data)
    session = bmc.sessions.get(clientaddr)
    if session is not None and not is_sessionless(packet) \
            and not _starts_new_session(session, packet):
        session.receive(packet)
        return
    bmc.sessionless_data(packet, clientaddr)


def _starts_new_session(session: RmcpSession, data: bytearray) -> bool:
    """An Open Session Request that is not a retransmission for ``session``: a new
    proposal, or any request once the handshake is over (over loopback a real
    retransmission arrives before the client's next step, never after RAKP 3)."""
    if not is_open_session_request(data):
        return False
    return session.established or (OPEN_SESSION_REQUEST, bytes(data[16:])) \
        not in session.answers


def disable_pyghmi_io_thread() -> None:
    """Keep pyghmi from starting its IO thread in this process (PacketLoop reads
    the sockets instead). Refuses if a pyghmi client already started it."""
    if isinstance(ipmisession.iothread, threading.Thread):
        raise RuntimeError("pyghmi's IO thread already runs in this process; virtual "
                           "BMCs need a process of their own")
    # _assignsocket starts the thread only while ``iothread`` is None.
    ipmisession.iothread = "disabled: virtlab.rmcp_server.PacketLoop serves the sockets"
    ipmisession.iothreadready = True


class PacketLoop:
    """Serves the UDP sockets of every BMC of the process from one thread (epoll)."""

    def __init__(self):
        self._selector = selectors.DefaultSelector()

    def add(self, bmc) -> None:
        self._selector.register(bmc.serversocket, selectors.EVENT_READ, bmc)

    def run(self, stop: threading.Event, tick: float = 0.2) -> None:
        """Answer packets until ``stop`` is set (checked every ``tick`` seconds)."""
        try:
            while not stop.is_set():
                for key, _ in self._selector.select(tick):
                    self._drain(key.fileobj, key.data)
        finally:
            self._selector.close()

    def _drain(self, sock: socket.socket, bmc) -> None:
        for _ in range(BATCH):
            try:
                # MSG_DONTWAIT: pyghmi's send path leaves the socket blocking.
                data, clientaddr = sock.recvfrom(RECV_SIZE, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. ICMP port unreachable from a gone client
                LOG.debug("BMC %s: recvfrom: %s", bmc.port, exc)
                return
            try:
                route(bmc, data, clientaddr)
            except Exception:  # one bad packet must not stop every BMC
                LOG.exception("BMC %s: packet from %s failed", bmc.port, clientaddr)
