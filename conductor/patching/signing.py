"""Patch signatures: the keyless v1 checksum and the RSA v2 signature, plus keys.

* ``signature`` (v1): all-ones 128-bit value XOR the MD5 of each signed member,
  written with ``%x`` (specs/starlingx-patching.md §1.2). Integrity only.
* ``signature.v2``: RSA-2048 PSS (MGF1-SHA256, salt 32) over SHA-256 of the signed
  members concatenated in order; verification also accepts PKCS#1 v1.5 (§1.3),
  against every certificate or public key in the trust store.

The trust store is a directory of PEM files (X.509 certificates or public keys):
``[patching] trusted_keys_dir``, default DATA_DIR/patching/trusted. Keys are made
by ``metalcast patch keygen``; a "dev" key is one whose file name starts with
``dev`` (it raises the developer-certificate alarm while trusted).
"""
from __future__ import annotations

import datetime
import hashlib
import os
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils
from cryptography.x509.oid import NameOID

from conductor.patching.metadata import PatchFormatError

ALL_ONES = (1 << 128) - 1
PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
CHUNK = 1 << 20


def member_digests(paths: list[Path]) -> tuple[list[str], bytes]:
    """(MD5 hex of each member, SHA-256 over all members in order), streamed."""
    md5s, whole = [], hashlib.sha256()
    for path in paths:
        md5 = hashlib.md5()
        with open(path, "rb") as stream:
            while chunk := stream.read(CHUNK):
                md5.update(chunk)
                whole.update(chunk)
        md5s.append(md5.hexdigest())
    return md5s, whole.digest()


def v1_checksum(md5_hexes: list[str]) -> str:
    value = ALL_ONES
    for hexdigest in md5_hexes:
        value ^= int(hexdigest, 16)
    return "%x" % value


def v1_verify(signature: bytes, md5_hexes: list[str]) -> None:
    try:
        value = int(signature.decode("ascii").strip(), 16)
    except (UnicodeDecodeError, ValueError):
        raise PatchFormatError(reason="Patch failed verification: signature is not hex") \
            from None
    for hexdigest in md5_hexes:
        value ^= int(hexdigest, 16)
    if value != ALL_ONES:
        raise PatchFormatError(reason="Patch failed verification")


def v2_sign(private_key: rsa.RSAPrivateKey, digest: bytes) -> bytes:
    return private_key.sign(digest, PSS, utils.Prehashed(hashes.SHA256()))


def v2_verify(signature: bytes, digest: bytes, trusted: list) -> str:
    """The name of the trusted key that verifies ``signature``; error if none does."""
    prehashed = utils.Prehashed(hashes.SHA256())
    for name, key in trusted:
        for pad in (PSS, padding.PKCS1v15()):
            try:
                key.verify(signature, digest, pad, prehashed)
                return name
            except (InvalidSignature, ValueError, TypeError):
                continue
    if not trusted:
        raise PatchFormatError(reason="Signature check failed: no trusted patch keys are "
                               "installed (add certificates to the trust directory)")
    raise PatchFormatError(reason="Signature check failed: the patch is not signed by a "
                           "trusted key (tampered, or signed with an untrusted key)")


def load_trusted(directory: Path) -> list[tuple[str, rsa.RSAPublicKey]]:
    """(file stem, public key) for every PEM certificate or public key in ``directory``."""
    trusted = []
    for path in sorted(Path(directory).glob("*.pem")) if Path(directory).is_dir() else []:
        data = path.read_bytes()
        key: object
        try:
            if b"BEGIN CERTIFICATE" in data:
                key = x509.load_pem_x509_certificate(data).public_key()
            else:
                key = serialization.load_pem_public_key(data)
        except ValueError:
            continue  # a private key or junk in the trust dir is not a trusted key
        if isinstance(key, rsa.RSAPublicKey):
            trusted.append((path.stem, key))
    return trusted


def load_private(path: Path) -> rsa.RSAPrivateKey:
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise PatchFormatError(reason=f"cannot read signing key {path}: {exc}") from None
    if not isinstance(key, rsa.RSAPrivateKey) or key.key_size < 2048:
        raise PatchFormatError(reason=f"{path} is not an RSA private key of 2048+ bits")
    return key


def generate(key_dir: Path, cert_dir: Path, name: str = "formal") -> tuple[Path, Path]:
    """Write ``key_dir/<name>-private-key.pem`` (0600) and its self-signed
    ``cert_dir/<name>-certificate.pem`` (the trust store entry)."""
    key_dir, cert_dir = Path(key_dir), Path(cert_dir)
    key_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    cert_dir.mkdir(parents=True, exist_ok=True)
    key_path = key_dir / f"{name}-private-key.pem"
    cert_path = cert_dir / f"{name}-certificate.pem"
    if key_path.exists():
        raise PatchFormatError(reason=f"{key_path} exists; refusing to overwrite a key")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as stream:
        stream.write(pem)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                            f"metalcast patch signing ({name})")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=3650))
            .sign(key, hashes.SHA256()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path
