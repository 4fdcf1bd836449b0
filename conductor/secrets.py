"""BMC secrets encrypted at rest: one Fernet key in the data dir, tagged ciphertexts.

The secret values of a node's driver_info (passwords, tokens, keys: any key that
``is_secret_key`` recognises, at any depth) are stored as ``fernet:v1:<token>``
strings; the token holds the JSON of the value, so numbers stay numbers. Only the
conductor decrypts (``Task.driver_info``), and only values under secret-named keys;
the API shows every secret as ``******`` (``mask``, nested keys too, as Ironic's
``strutils.mask_dict_password``). A secret never leaves the service: JSON Patch
``copy``/``move``/``test`` cannot read one (``refuse_secret_reads``), and a client
cannot plant a ``fernet:v1:`` value of its own (``restore_masked``).

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

import jsonpointer
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
#: JSON Patch operations that read a value, and the member naming what they read.
READING_OPS = {"copy": "from", "move": "from", "test": "path"}


def is_secret_key(key: str) -> bool:
    """True when values under ``key`` are secrets."""
    lowered = key.lower()
    return any(marker in lowered for marker in SECRET_MARKERS)


def is_encrypted(value) -> bool:
    return isinstance(value, str) and value.startswith(TAG)


def mask(value):
    """Copy of ``value`` with every secret at any depth replaced by ******: a whole
    value under a secret-named key, whatever its type (empty ones stay empty)."""
    if isinstance(value, dict):
        return {k: (MASK if is_secret_key(k) and v not in (None, "") else mask(v))
                for k, v in value.items()}
    if isinstance(value, list):
        return [mask(v) for v in value]
    return value


def holds_secret(value) -> bool:
    """True when ``value`` has a secret-named key at any depth."""
    if isinstance(value, dict):
        return any(is_secret_key(k) or holds_secret(v) for k, v in value.items())
    if isinstance(value, list):
        return any(holds_secret(v) for v in value)
    return False


def refuse_secret_reads(patch, doc: dict) -> None:
    """400 for a JSON Patch operation that would read a secret of ``doc``.

    ``copy`` and ``move`` would put a stored (encrypted) secret where it is shown or
    decrypted as something else (``/extra``, ``deploy_kernel`` in a validate error),
    and ``test`` answers whether a guess equals it. They are refused when what they
    read is a secret, lies under a secret-named key or holds one; add, replace and
    remove, the operations clients send, are not affected. Malformed operations are
    left to the patch itself, which reports them.
    """
    for op in patch if isinstance(patch, list) else ():
        name = op.get("op") if isinstance(op, dict) else None
        member = READING_OPS.get(name) if isinstance(name, str) else None
        pointer = op.get(member) if member else None
        if isinstance(pointer, str) and _reads_secret(doc, pointer):
            raise errors.InvalidParameter(
                f"The patch operation {op['op']!r} cannot read {pointer!r}: it is or holds "
                "a secret, and secrets never leave the service. Send the value itself "
                "with add or replace.")


def _reads_secret(doc: dict, pointer: str) -> bool:
    try:
        parts = jsonpointer.JsonPointer(pointer).parts
    except jsonpointer.JsonPointerException:
        return False
    if any(is_secret_key(part) for part in parts):
        return True
    return holds_secret(jsonpointer.resolve_pointer(doc, pointer, None))


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
        """Copy of ``info`` with every plaintext secret value encrypted, at any depth.

        Idempotent: values already encrypted (with any key) are left as they are,
        so a dict that mixes stored and newly patched values can be passed whole.
        """
        if not info:
            return info
        return self._seal(info)

    def decrypt_dict(self, info: dict | None) -> dict:
        """Copy of ``info`` with the encrypted values under secret-named keys (at any
        depth) decrypted. A ``fernet:v1:`` value under any other key stays as it is:
        only a secret's own key may turn a ciphertext into plaintext."""
        return self._open(info or {}, "")

    def _seal(self, value):
        if isinstance(value, dict):
            return {k: ((self._encrypt(v) if _needs_encryption(k, v) else v)
                        if is_secret_key(k) else self._seal(v)) for k, v in value.items()}
        if isinstance(value, list):
            return [self._seal(v) for v in value]
        return value

    def _open(self, value, where: str):
        if isinstance(value, dict):
            return {k: ((self._decrypt(where + k, v) if is_encrypted(v) else v)
                        if is_secret_key(k) else self._open(v, f"{where}{k}."))
                    for k, v in value.items()}
        if isinstance(value, list):
            return [self._open(v, f"{where}{i}.") for i, v in enumerate(value)]
        return value

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
    """``new`` with every secret sent back as ``******`` replaced by the stored value
    at the same place (at any depth).

    Clients echo the mask they were shown; storing it would silently replace the
    password with six asterisks. Without a stored value the mask is refused. A
    ``fernet:v1:`` value that is not the one stored at that place is refused too: it
    came from the client, and the conductor would decrypt it as this secret.
    """
    if not new:
        return new
    return _restore(stored or {}, new, field)


def _restore(stored, new, where: str):
    if isinstance(new, dict):
        was = stored if isinstance(stored, dict) else {}
        return {k: (_restore_secret(was.get(k), v, f"{where}.{k}") if is_secret_key(k)
                    else _restore(was.get(k), v, f"{where}.{k}")) for k, v in new.items()}
    if isinstance(new, list):
        items = stored if isinstance(stored, list) else []
        return [_restore(items[i] if i < len(items) else None, v, f"{where}.{i}")
                for i, v in enumerate(new)]
    return new


def _restore_secret(stored, value, where: str):
    if value == MASK:
        if stored in (None, ""):
            raise errors.InvalidParameter(
                f"{where} is {MASK!r}, the mask the API shows for secrets; send the "
                "secret itself.")
        return stored
    if is_encrypted(value) and value != stored:
        raise errors.InvalidParameter(
            f"{where} starts with {TAG!r}, which marks values this service encrypted "
            "itself; send the secret itself.")
    return value


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
