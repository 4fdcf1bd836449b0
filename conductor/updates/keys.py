"""The Ed25519 key that signs delta payloads: generated once in the data dir.

The private key stays with the conductor (``DATA_DIR/keys/delta_ed25519.key``,
0600); agents get the public key with the deploy step, over the token-protected
TLS channel, and refuse any payload it does not verify.
"""
from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from conductor import errors

KEY_NAME = "delta_ed25519.key"


def default_path(data_dir: Path) -> Path:
    return Path(data_dir) / "keys" / KEY_NAME


def load_or_create(path: Path) -> ed25519.Ed25519PrivateKey:
    """The private key at ``path``; a new one is written there if none exists."""
    path = Path(path)
    if path.exists():
        return load_private(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as stream:
        stream.write(pem)
    return key


def load_private(path: Path) -> ed25519.Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise errors.InvalidParameter(f"cannot read the delta signing key {path}: {exc}") \
            from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise errors.InvalidParameter(f"{path} is not an Ed25519 private key")
    return key


def public_pem(key: ed25519.Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
