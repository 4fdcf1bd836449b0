"""DNS registration: the one place metalcast speaks DNS UPDATE (RFC 2136, dnspython).

``Rfc2136Dns`` keeps a host's A/AAAA records in the forward zone and a PTR record per
address in the reverse zones, signing every message with TSIG (RFC 8945). ``NoopDns``
is its twin when no DNS server is configured. Every dnspython and socket error is
translated here, once, into ``conductor.errors.DriverError``; the TSIG secret never
appears in a message, a log line or a repr.

Reverse zones: a configured ``reverse_zone_v4``/``reverse_zone_v6`` is used as is.
Otherwise the zone holding each PTR name is asked from the server itself, as
``nsupdate`` does: an SOA query for the PTR name is answered by an authoritative
server with the enclosing zone's SOA, so BIND's own zone cut decides (a /8, /16 or
/24 zone, or an RFC 2317 delegation) and no prefix length has to be guessed.
"""
from __future__ import annotations

import abc
import base64
import binascii
import dataclasses
import ipaddress
import re
import socket

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.reversename
import dns.tsig
import dns.update

from conductor import errors

#: Config value -> the TSIG algorithm name dnspython signs with.
TSIG_ALGORITHMS = {
    "hmac-md5": dns.tsig.HMAC_MD5, "hmac-sha1": dns.tsig.HMAC_SHA1,
    "hmac-sha224": dns.tsig.HMAC_SHA224, "hmac-sha256": dns.tsig.HMAC_SHA256,
    "hmac-sha384": dns.tsig.HMAC_SHA384, "hmac-sha512": dns.tsig.HMAC_SHA512,
}

#: Response code -> what it means for an update of ``zone`` (RFC 2136 section 2.2).
RCODE_REASONS = {
    dns.rcode.REFUSED: "refused the update of zone {zone} (REFUSED): the zone does not "
                       "allow updates with key {key} (check allow-update / update-policy)",
    dns.rcode.NOTAUTH: "is not authoritative for zone {zone}, or did not accept key {key} "
                       "(NOTAUTH)",
    dns.rcode.NOTZONE: "found a name outside zone {zone} in the update (NOTZONE)",
    dns.rcode.SERVFAIL: "failed to apply the update of zone {zone} (SERVFAIL)",
    dns.rcode.FORMERR: "could not parse the update of zone {zone} (FORMERR)",
    dns.rcode.NOTIMP: "does not implement DNS UPDATE (NOTIMP)",
    dns.rcode.YXDOMAIN: "rejected the update of zone {zone}: a prerequisite failed (YXDOMAIN)",
    dns.rcode.YXRRSET: "rejected the update of zone {zone}: a prerequisite failed (YXRRSET)",
    dns.rcode.NXDOMAIN: "rejected the update of zone {zone}: a prerequisite failed (NXDOMAIN)",
    dns.rcode.NXRRSET: "rejected the update of zone {zone}: a prerequisite failed (NXRRSET)",
}

#: TSIG error the server signalled -> what to fix (RFC 8945 section 5.3).
TSIG_REASONS = {
    dns.tsig.PeerBadKey: "does not know TSIG key {key} with algorithm {algorithm} (BADKEY)",
    dns.tsig.PeerBadSignature: "rejected the TSIG signature of key {key} (BADSIG): the "
                               "secret or the algorithm differs from the server's",
    dns.tsig.PeerBadTime: "rejected the TSIG time of key {key} (BADTIME): the clocks of "
                          "metalcast and the DNS server differ",
    dns.tsig.PeerBadTruncation: "rejected the TSIG MAC length of key {key} (BADTRUNC)",
}

#: A host name label: letters, digits and inner hyphens (RFC 952/1123), 63 octets.
_LABEL_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_NOT_LABEL_CHARS = re.compile(r"[^a-z0-9-]+")
#: Address family -> (forward record type, settings attribute naming the reverse zone).
FAMILIES = {4: ("A", "reverse_zone_v4"), 6: ("AAAA", "reverse_zone_v6")}
#: Reverse trees a configured reverse zone must lie in.
REVERSE_ROOTS = {4: dns.name.from_text("in-addr.arpa."), 6: dns.name.from_text("ip6.arpa.")}
PROTOCOLS = ("udp", "tcp")


def host_label(node_name: str | None, zone: str = "") -> str | None:
    """The DNS label for a node name, or None when none can be made from it.

    Lower-cased; a trailing ``.<zone>`` is dropped (a node named after its FQDN);
    every run of characters outside ``[a-z0-9-]`` (dots, underscores, spaces,
    non-ASCII) becomes one hyphen; hyphens at either end are dropped. Names whose
    result is empty or longer than 63 octets are refused rather than truncated,
    because truncation would make two nodes share one host name.
    """
    if not node_name:
        return None
    name = node_name.strip().lower().rstrip(".")
    suffix = "." + zone.strip().lower().rstrip(".")
    if zone and name.endswith(suffix):
        name = name[:-len(suffix)]
    label = _NOT_LABEL_CHARS.sub("-", name)
    label = re.sub("-{2,}", "-", label).strip("-")
    return label if _LABEL_RE.match(label) else None


def reverse_name(address: str) -> dns.name.Name:
    """The PTR owner name of an IPv4 (in-addr.arpa) or IPv6 (ip6.arpa nibbles) address."""
    return dns.reversename.from_address(str(ipaddress.ip_address(address)))


def split_addresses(values) -> tuple[list[str], list[str]]:
    """(valid addresses in canonical text form, without duplicates; rejected values)."""
    good: list[str] = []
    bad: list[str] = []
    for value in values or ():
        try:
            text = str(ipaddress.ip_address(str(value).strip()))
        except ValueError:
            bad.append(str(value))
            continue
        if text not in good:
            good.append(text)
    return good, bad


@dataclasses.dataclass(frozen=True)
class DnsConfig:
    """The ``[dns]`` settings, parsed and checked once."""

    server: str
    port: int
    zone: dns.name.Name
    reverse_zone_v4: dns.name.Name | None
    reverse_zone_v6: dns.name.Name | None
    key_name: str
    secret: str = dataclasses.field(repr=False)
    algorithm: str = "hmac-sha256"
    ttl: int = 300
    timeout: float = 5.0
    protocol: str = "udp"

    @classmethod
    def from_settings(cls, settings) -> DnsConfig:
        """Parse the dns_* settings; ConfigError naming the option when one is wrong."""
        key, secret = settings.dns.tsig_key_name.strip(), settings.dns.tsig_secret.strip()
        algorithm = settings.dns.tsig_algorithm.strip().lower()
        _check(settings.dns.zone.strip(), "dns.zone is required when dns.server is set")
        _check(bool(key) == bool(secret), "dns.tsig_key_name and dns.tsig_secret must be "
               "set together (or both left empty for unsigned updates)")
        _check(algorithm in TSIG_ALGORITHMS, f"dns.tsig_algorithm must be one of "
               f"{', '.join(TSIG_ALGORITHMS)}, not {algorithm!r}")
        _check(not secret or _is_base64(secret), "dns.tsig_secret is not valid base64 "
               "(use the secret line of `tsig-keygen`)")
        _check(1 <= settings.dns.port <= 65535, "dns.port must be between 1 and 65535")
        _check(0 <= settings.dns.ttl <= 2**31 - 1, "dns.ttl must be >= 0")
        _check(settings.dns.timeout > 0, "dns.timeout must be > 0")
        protocol = settings.dns.protocol.strip().lower()
        _check(protocol in PROTOCOLS, "dns.protocol must be 'udp' or 'tcp'")
        return cls(server=settings.dns.server.strip(), port=settings.dns.port,
                   zone=_zone(settings.dns.zone, "dns.zone"),
                   reverse_zone_v4=_reverse_zone(settings.dns.reverse_zone_v4, 4),
                   reverse_zone_v6=_reverse_zone(settings.dns.reverse_zone_v6, 6),
                   key_name=key, secret=secret, algorithm=algorithm,
                   ttl=settings.dns.ttl, timeout=float(settings.dns.timeout),
                   protocol=protocol)


def _check(ok, reason: str) -> None:
    if not ok:
        raise errors.ConfigError(reason=reason)


def _is_base64(text: str) -> bool:
    try:
        return bool(base64.b64decode(text, validate=True))
    except (binascii.Error, ValueError):
        return False


def _zone(text: str, option: str) -> dns.name.Name:
    try:
        return dns.name.from_text(text.strip())
    except dns.exception.DNSException as exc:
        raise errors.ConfigError(reason=f"{option} {text!r} is not a DNS name: {exc}") \
            from None


def _reverse_zone(text: str, family: int) -> dns.name.Name | None:
    if not text.strip():
        return None
    option = f"dns.reverse_zone_v{family}"
    zone = _zone(text, option)
    _check(zone.is_subdomain(REVERSE_ROOTS[family]),
           f"{option} {text!r} must lie under {REVERSE_ROOTS[family]}")
    return zone


class DnsInterface(abc.ABC):
    """Keeps one host's address and pointer records; ``validate`` checks the config.

    ``register``/``unregister`` return notes (addresses whose PTR was skipped and
    why) for the caller to log with the node's UUID; failures raise DriverError.
    """

    enabled = True
    #: The forward zone host names are registered in ("" when disabled).
    zone = ""

    @abc.abstractmethod
    def validate(self) -> None: ...

    @abc.abstractmethod
    def fqdn(self, label: str) -> str: ...

    @abc.abstractmethod
    def register(self, name: str, addresses: list[str]) -> list[str]: ...

    @abc.abstractmethod
    def unregister(self, name: str, addresses: list[str]) -> list[str]: ...


class NoopDns(DnsInterface):
    """No DNS server configured: nothing is registered, nothing fails."""

    enabled = False

    def validate(self) -> None:
        pass

    def fqdn(self, label: str) -> str:
        return label

    def register(self, name: str, addresses: list[str]) -> list[str]:
        return []

    def unregister(self, name: str, addresses: list[str]) -> list[str]:
        return []


class Rfc2136Dns(DnsInterface):
    """DNS UPDATE against one authoritative server, TSIG-signed when a key is set."""

    def __init__(self, config: DnsConfig):
        self.config = config
        self.zone = config.zone.to_text()
        self._key = (dns.tsig.Key(config.key_name, config.secret,
                                  TSIG_ALGORITHMS[config.algorithm])
                     if config.key_name else None)

    def validate(self) -> None:
        """Config errors surface at start-up; the server itself is only asked when used."""
        server = self.config.server
        try:
            ipaddress.ip_address(server)
        except ValueError:
            labels = server.lower().rstrip(".").split(".")
            _check(all(_LABEL_RE.match(label) for label in labels),
                   f"dns.server {server!r} is neither an IP address nor a host name")

    def fqdn(self, label: str) -> str:
        return dns.name.from_text(label, origin=self.config.zone).to_text()

    def register(self, name: str, addresses: list[str]) -> list[str]:
        """Replace ``name``'s A/AAAA records by ``addresses``; a PTR for each address."""
        owner = dns.name.from_text(self.fqdn(name))
        update = self._message(self.config.zone)
        for rdtype in ("A", "AAAA"):
            update.delete(owner, rdtype)
        for address in addresses:
            update.add(owner, self.config.ttl, _forward_type(address), address)
        self._send(update, self.config.zone)
        return self._pointers(owner, addresses, remove=False)

    def unregister(self, name: str, addresses: list[str]) -> list[str]:
        """Delete exactly the records ``register`` made; records of others stay."""
        if not addresses:
            return []
        owner = dns.name.from_text(self.fqdn(name))
        update = self._message(self.config.zone)
        for address in addresses:
            update.delete(owner, _forward_type(address), address)
        self._send(update, self.config.zone)
        return self._pointers(owner, addresses, remove=True)

    # -- PTR records -----------------------------------------------------------
    def _pointers(self, owner: dns.name.Name, addresses: list[str],
                  remove: bool) -> list[str]:
        """One update per reverse zone; returns the notes about skipped addresses."""
        by_zone: dict[dns.name.Name, list[dns.name.Name]] = {}
        notes = []
        for address in addresses:
            ptr = reverse_name(address)
            zone, why = self._reverse_zone_of(ptr, ipaddress.ip_address(address).version)
            if zone is None:
                notes.append(f"PTR for {address} skipped: {why}")
            else:
                by_zone.setdefault(zone, []).append(ptr)
        for zone, ptrs in by_zone.items():
            update = self._message(zone)
            for ptr in ptrs:
                if remove:
                    update.delete(ptr, "PTR", owner.to_text())
                else:
                    update.replace(ptr, self.config.ttl, "PTR", owner.to_text())
            self._send(update, zone)
        return notes

    def _reverse_zone_of(self, ptr: dns.name.Name, family: int):
        """(zone, None) or (None, why not): configured zone, else the server's zone cut."""
        configured = getattr(self.config, FAMILIES[family][1])
        if configured is not None:
            if ptr.is_subdomain(configured):
                return configured, None
            return None, f"outside the configured reverse zone {configured}"
        zone = self._zone_cut(ptr)
        if zone is None:
            return None, f"the DNS server has no zone holding {ptr}"
        return zone, None

    def _zone_cut(self, ptr: dns.name.Name) -> dns.name.Name | None:
        """The zone the server holds ``ptr`` in, from the SOA of its answer (as nsupdate)."""
        query = dns.message.make_query(ptr, "SOA")
        query.flags &= ~dns.flags.RD
        if self._key is not None:
            query.use_tsig(self._key)
        response = self._exchange(query, str(ptr))
        if response.rcode() not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN) or \
                not response.flags & dns.flags.AA:
            return None  # REFUSED or not authoritative: no zone there on this server
        for rrset in response.answer + response.authority:
            if rrset.rdtype == dns.rdatatype.SOA and ptr.is_subdomain(rrset.name):
                return rrset.name
        return None

    # -- the wire --------------------------------------------------------------
    def _message(self, zone: dns.name.Name) -> dns.update.UpdateMessage:
        update = dns.update.UpdateMessage(zone)
        if self._key is not None:
            update.use_tsig(self._key)
        return update

    def _send(self, update: dns.update.UpdateMessage, zone: dns.name.Name) -> None:
        response = self._exchange(update, str(zone))
        rcode = response.rcode()
        if rcode != dns.rcode.NOERROR:
            reason = RCODE_REASONS.get(rcode, "answered {rcode} to the update of zone {zone}")
            raise self._error(reason.format(zone=zone, key=self._key_text(),
                                            rcode=dns.rcode.to_text(rcode)))
        if self._key is not None and not response.had_tsig:
            raise self._error(f"answered the update of zone {zone} without a TSIG "
                              "signature; refusing to trust it")

    def _exchange(self, message: dns.message.Message, what: str) -> dns.message.Message:
        """Send and receive once; every library or socket error becomes DriverError."""
        where, timeout, port = self._address(), self.config.timeout, self.config.port
        try:
            if self.config.protocol == "tcp":
                return dns.query.tcp(message, where, timeout=timeout, port=port)
            return dns.query.udp_with_fallback(message, where, timeout=timeout,
                                               port=port)[0]
        except dns.exception.Timeout:
            raise self._error(f"did not answer within {timeout:g}s ({what})") from None
        except dns.tsig.PeerError as exc:
            reason = TSIG_REASONS.get(type(exc), "rejected the TSIG signature of key {key}")
            raise self._error(reason.format(key=self._key_text(),
                                            algorithm=self.config.algorithm)) from None
        except dns.tsig.BadSignature:
            raise self._error(f"sent a response whose TSIG signature does not verify with "
                              f"key {self._key_text()} ({what})") from None
        except (OSError, EOFError) as exc:
            raise self._error(f"could not be reached ({what}): {type(exc).__name__}: "
                              f"{exc}") from None
        except dns.exception.DNSException as exc:
            raise self._error(f"sent an answer that cannot be used ({what}): "
                              f"{type(exc).__name__}: {exc}") from None

    def _address(self) -> str:
        """The server's IP address (a host name is resolved on each use)."""
        server = self.config.server
        try:
            ipaddress.ip_address(server)
            return server
        except ValueError:
            pass
        try:
            found = socket.getaddrinfo(server, self.config.port, proto=socket.IPPROTO_UDP)
            return str(found[0][4][0])
        except (OSError, IndexError) as exc:
            raise self._error(f"cannot be resolved: {exc}") from None

    def _key_text(self) -> str:
        return repr(self.config.key_name) if self.config.key_name else "(none: unsigned)"

    def _error(self, reason: str) -> errors.DriverError:
        return errors.DriverError(reason=f"DNS server {self.config.server}:"
                                         f"{self.config.port} {reason}")


def _forward_type(address: str) -> str:
    return FAMILIES[ipaddress.ip_address(address).version][0]


def build(settings) -> DnsInterface:
    """The implementation the settings ask for: RFC 2136 when dns.server is set."""
    if settings is None or not settings.dns.server.strip():
        return NoopDns()
    client = Rfc2136Dns(DnsConfig.from_settings(settings))
    client.validate()
    return client
