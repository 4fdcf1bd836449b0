"""BMC secrets encrypted at rest: one Fernet key in the data dir, tagged ciphertexts.

The secret values of a node's driver_info (passwords, tokens, keys: any key that
``is_secret_key`` recognises) are stored as ``fernet:v1:<token>`` strings; the
token holds the JSON of the value, so numbers stay numbers. Only the conductor
decrypts (``Task.driver_info``); the API shows every secret as ``******``.

The key is generated on first start in ``DATA_DIR/keys/secrets.key`` (directory
0700, file 0600). Several conductors sharing one database must share this file
(``[secrets] key_file``): a value encrypted with one key cannot be read with another.
"""
from __future__ import annotations

import json
import logging
import os
import stat
import tempfile
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from conductor import errors

LOG = logging.getLogger(__name__)

#: Substrings of a key name that make its value a secret (masked by the API,
#: encrypted at rest in driver_info). The one definition; api/v1/views.py uses it.
SECRET_MARKERS = ("pass", "secret", "token", "private_key", "kg_key", "configdrive")
#: What the API shows instead of a secret (and what clients echo back in PATCHes).
MASK = "******"
#: Prefix of an encrypted value; what follows is a Fernet token.
TAG = "fernet:v1:"

KEY_DIR = "keys"
KEY_NAME = "secrets.key"


def is_secret_key(key: str) -> bool:
    """True when values under ``key`` are secrets."""
    lowered = key.lower()
    return any(marker in lowered for marker in SECRET_MARKERS)


def is_encrypted(value) -> bool:
    return isinstance(value, str) and value.startswith(TAG)


def key_path(settings) -> Path:
    """Where the key lives: ``[secrets] key_file`` or DATA_DIR/keys/secrets.key."""
    configured = settings.secrets.key_file
    if configured:
        return Path(os.path.expanduser(configured))
    return settings.data_path / KEY_DIR / KEY_NAME


class Cipher:
    """Encrypts and decrypts the secret values of a dict with one Fernet key."""

    def __init__(self, key: bytes, path: Path | str = "(in memory)"):
        try:
            self._fernet = Fernet(key)
        except (ValueError, TypeError):
            raise errors.ConfigError(reason=f"{path} does not hold a valid Fernet key "
                                     "(32 url-safe base64-encoded bytes)") from None
        self.path = str(path)

    @classmethod
    def from_settings(cls, settings) -> Cipher:
        path = key_path(settings)
        return cls(load_or_create_key(path), path)

    def encrypt_dict(self, info: dict | None) -> dict | None:
        """Copy of ``info`` with every plaintext secret value encrypted.

        Idempotent: values already encrypted (with any key) are left as they are,
        so a dict that mixes stored and newly patched values can be passed whole.
        """
        if not info:
            return info
        return {k: (self._encrypt(v) if _needs_encryption(k, v) else v)
                for k, v in info.items()}

    def decrypt_dict(self, info: dict | None) -> dict:
        """Copy of ``info`` with every encrypted value decrypted; plaintext passes."""
        return {k: (self._decrypt(k, v) if is_encrypted(v) else v)
                for k, v in (info or {}).items()}

    def _encrypt(self, value) -> str:
        return TAG + self._fernet.encrypt(json.dumps(value).encode()).decode("ascii")

    def _decrypt(self, key: str, value: str):
        try:
            return json.loads(self._fernet.decrypt(value[len(TAG):].encode("ascii")))
        except (InvalidToken, UnicodeEncodeError, ValueError):
            raise errors.SecretsError(reason=(
                f"Cannot decrypt driver_info.{key} with the key in {self.path}: it was "
                "encrypted with another key (was the key file replaced, rotated or not "
                "shared between conductors?). Restore the original key file, or set "
                f"driver_info.{key} again.")) from None


def _needs_encryption(key: str, value) -> bool:
    return is_secret_key(key) and value not in (None, "") and not is_encrypted(value)


def restore_masked(stored: dict | None, new: dict | None, field: str = "driver_info"):
    """``new`` with every secret sent back as ``******`` replaced by the stored value.

    Clients echo the mask they were shown; storing it would silently replace the
    password with six asterisks. Without a stored value the mask is refused.
    """
    if not new:
        return new
    stored = stored or {}
    result = dict(new)
    for key, value in new.items():
        if value != MASK or not is_secret_key(key):
            continue
        if stored.get(key) in (None, ""):
            raise errors.InvalidParameter(
                f"{field}.{key} is {MASK!r}, the mask the API shows for secrets; send "
                "the secret itself.")
        result[key] = stored[key]
    return result


def load_or_create_key(path: Path) -> bytes:
    """The key in ``path``, generated (atomically, 0600) when the file does not exist."""
    path = Path(path)
    if not path.exists():
        _create_key(path)
    _check_permissions(path)
    try:
        return path.read_bytes().strip()
    except OSError as exc:
        raise errors.ConfigError(reason=f"cannot read the secrets key {path}: "
                                 f"{exc.strerror}") from None


def _create_key(path: Path) -> None:
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # mkstemp creates the file 0600; link() publishes it only complete and never
        # replaces a key that another process created first (that one wins).
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(Fernet.generate_key() + b"\n")
                handle.flush()
                os.fsync(handle.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                return
        finally:
            os.unlink(tmp)
        _fsync_dir(path.parent)
    except OSError as exc:
        raise errors.ConfigError(reason=f"cannot create the secrets key {path}: "
                                 f"{exc.strerror}") from None
    LOG.info("Generated a new secrets key in %s", path)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _check_permissions(path: Path) -> None:
    """Refuse a key others can read, or that others could replace."""
    try:
        mode = path.stat().st_mode
        dir_mode = path.parent.stat().st_mode
    except OSError as exc:
        raise errors.ConfigError(reason=f"cannot read the secrets key {path}: "
                                 f"{exc.strerror}") from None
    if not stat.S_ISREG(mode):
        raise errors.ConfigError(reason=f"secrets key {path} is not a regular file")
    if mode & 0o077:
        raise errors.ConfigError(reason=(
            f"secrets key {path} is accessible by other users (mode "
            f"{stat.S_IMODE(mode):04o}); it must be readable by its owner only: "
            f"chmod 600 {path}"))
    if dir_mode & 0o022:
        raise errors.ConfigError(reason=(
            f"the directory of the secrets key, {path.parent}, is writable by other "
            f"users (mode {stat.S_IMODE(dir_mode):04o}), who could replace the key: "
            f"chmod 700 {path.parent}"))


def encrypt_stored(store, cipher: Cipher) -> int:
    """Encrypt plaintext secrets left in driver_info by an older version; how many nodes."""
    count = 0
    for node in store.list_nodes(columns=("id", "uuid", "driver_info")):
        sealed = cipher.encrypt_dict(node.driver_info)
        if sealed != node.driver_info and store.update_node(
                node.id, {"driver_info": sealed}, expect={"reservation": None}):
            LOG.info("Node %s: encrypted the plaintext secrets of its driver_info", node.uuid)
            count += 1
    return count
