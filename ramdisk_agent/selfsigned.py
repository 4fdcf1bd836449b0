"""The agent's self-signed TLS certificate, DER-encoded by hand.

Every agent makes one at start-up. ``cryptography.x509`` would be the obvious
builder, but importing it costs about as much as the rest of the certificate work
together (~25 ms here, far more under TCG), and the certificate is always the same
shape. So only the EC key and the ECDSA signature come from ``cryptography``'s
primitives; the X.509 v3 structure (RFC 5280) is encoded here:

* subject = issuer = CN=<host>; serial: 159 random bits; valid from a day ago for
  a year (the ramdisk's, one per boot) or as long as the caller asks (the host
  agent keeps its certificate: its token is bound to it);
* extensions: subjectAltName (the IP address or DNS name the conductor calls),
  basicConstraints CA:TRUE (critical: the conductor pins it as its own CA),
  keyUsage digitalSignature + keyCertSign (critical), subjectKeyIdentifier;
* signature ecdsa-with-SHA256 over P-256.
"""
from __future__ import annotations

import datetime
import hashlib
import ipaddress
import secrets

#: Object identifiers, DER-encoded (tag 06 included).
OID_COMMON_NAME = bytes.fromhex("0603550403")
OID_ECDSA_SHA256 = bytes.fromhex("06082a8648ce3d040302")
OID_SUBJECT_ALT_NAME = bytes.fromhex("0603551d11")
OID_BASIC_CONSTRAINTS = bytes.fromhex("0603551d13")
OID_KEY_USAGE = bytes.fromhex("0603551d0f")
OID_SUBJECT_KEY_ID = bytes.fromhex("0603551d0e")
TRUE = bytes.fromhex("0101ff")


def _tlv(tag: int, content: bytes) -> bytes:
    """One DER element: tag, definite length, content."""
    size = len(content)
    if size < 0x80:
        return bytes([tag, size]) + content
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(length)]) + length + content


def _seq(*items: bytes) -> bytes:
    return _tlv(0x30, b"".join(items))


def _integer(value: int) -> bytes:
    return _tlv(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def _time(moment: datetime.datetime) -> bytes:
    """UTCTime until 2049, GeneralizedTime after (RFC 5280 4.1.2.5)."""
    if moment.year < 2050:
        return _tlv(0x17, moment.strftime("%y%m%d%H%M%SZ").encode())
    return _tlv(0x18, moment.strftime("%Y%m%d%H%M%SZ").encode())


def _name(common_name: str) -> bytes:
    attribute = _seq(OID_COMMON_NAME, _tlv(0x0C, common_name.encode()))
    return _seq(_tlv(0x31, attribute))


def _extension(oid: bytes, value: bytes, critical: bool = False) -> bytes:
    return _seq(oid, TRUE if critical else b"", _tlv(0x04, value))


def _alt_name(host: str) -> bytes:
    try:
        return _tlv(0x87, ipaddress.ip_address(host).packed)     # iPAddress [7]
    except ValueError:
        return _tlv(0x82, host.encode("idna"))                     # dNSName [2]


def _subject_key_id(spki: bytes) -> bytes:
    """SHA-1 of the subjectPublicKey bits (RFC 5280 4.2.1.2, method 1)."""
    # spki = SEQ { SEQ algorithm, BIT STRING key }: the key is the last element; an
    # uncompressed P-256 point is 65 bytes, after the BIT STRING's unused-bits byte.
    return hashlib.sha1(spki[-65:]).digest()


def certificate(host: str, days: int = 365) -> tuple[bytes, bytes]:
    """A new P-256 key and a self-signed CA certificate for ``host``, valid ``days``
    days: (certificate PEM, PKCS#8 key PEM)."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    spki = key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    algorithm = _seq(OID_ECDSA_SHA256)
    key_usage = _tlv(0x03, bytes([0x02, 0x84]))     # digitalSignature, keyCertSign
    extensions = _seq(
        _extension(OID_SUBJECT_ALT_NAME, _seq(_alt_name(host))),
        _extension(OID_BASIC_CONSTRAINTS, _seq(TRUE), critical=True),
        _extension(OID_KEY_USAGE, key_usage, critical=True),
        _extension(OID_SUBJECT_KEY_ID, _tlv(0x04, _subject_key_id(spki))))
    tbs = _seq(_tlv(0xA0, _integer(2)),                               # v3
               _integer(secrets.randbits(159) | 1 << 158),
               algorithm, _name(host),
               _seq(_time(now - datetime.timedelta(days=1)),
                    _time(now + datetime.timedelta(days=days))),
               _name(host), spki, _tlv(0xA3, extensions))
    signature = key.sign(tbs, ec.ECDSA(hashes.SHA256()))
    der = _seq(tbs, algorithm, _tlv(0x03, b"\x00" + signature))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return _pem(der), key_pem


def _pem(der: bytes) -> bytes:
    import base64
    text = base64.b64encode(der).decode()
    lines = [text[i:i + 64] for i in range(0, len(text), 64)]
    return ("-----BEGIN CERTIFICATE-----\n" + "\n".join(lines)
            + "\n-----END CERTIFICATE-----\n").encode()
