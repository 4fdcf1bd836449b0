"""A Redfish node's driver_info, parsed once into a typed, hashable value.

Parsing is offline (no BMC traffic), so ``validate()`` can run in the API thread.
Field names and defaults are Ironic's: redfish_address, redfish_system_id,
redfish_username, redfish_password, redfish_verify_ca, redfish_auth_type.
"""
from __future__ import annotations

import dataclasses
import os
import urllib.parse

from conductor import errors

#: redfish_auth_type values (Ironic's); the sushy classes live in client.py.
AUTH_TYPES = ("auto", "basic", "session")

#: Spellings of redfish_verify_ca that mean a boolean rather than a CA path.
BOOL_WORDS = {"true": True, "yes": True, "on": True, "1": True,
              "false": False, "no": False, "off": False, "0": False}

DEFAULT_ROOT = "/redfish/v1/"


@dataclasses.dataclass(frozen=True)
class RedfishInfo:
    """Where a node's Redfish system is and how to log in to it."""

    address: str                 #: scheme://host[:port], no path
    root_prefix: str             #: service root path, normally /redfish/v1/
    system_id: str | None        #: system resource path; None = the only system
    username: str | None
    password: str | None = dataclasses.field(repr=False)
    verify: bool | str = True    #: requests' verify: bool or CA bundle path
    auth_type: str = "auto"

    @property
    def cache_key(self) -> tuple:
        """What makes two nodes able to share one sushy session."""
        return (self.address, self.root_prefix, self.username, self.password,
                self.verify, self.auth_type)


def _bad(field: str, reason: str) -> errors.InvalidParameter:
    return errors.InvalidParameter(f"driver_info.{field} {reason}")


def parse_address(raw) -> tuple[str, str]:
    """``(base URL, root prefix)`` from redfish_address; host[:port] means https."""
    if not isinstance(raw, str) or not raw.strip():
        raise _bad("redfish_address", "is required: the URL of the Redfish service, "
                   "e.g. https://10.0.0.5 or 10.0.0.5:8443 (https is assumed)")
    text = raw.strip()
    if "://" not in text:
        text = "https://" + text  # Ironic's rule: a bare host[:port] means https
    parts = urllib.parse.urlsplit(text)
    try:
        port = parts.port
    except ValueError:
        raise _bad("redfish_address", f"{raw!r} has an invalid port") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _bad("redfish_address", f"{raw!r} is not an http(s) URL with a host")
    if parts.username or parts.password:
        raise _bad("redfish_address", "must not contain credentials; use "
                   "redfish_username and redfish_password")
    if parts.query or parts.fragment:
        raise _bad("redfish_address", f"{raw!r} must not have a query or fragment")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    base = f"{parts.scheme}://{host}" + (f":{port}" if port else "")
    path = parts.path.rstrip("/")
    return base, (path + "/" if path else DEFAULT_ROOT)


def parse_system_id(raw, root_prefix: str) -> str | None:
    """A system resource path; a bare Id is taken to live under <root>Systems/."""
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str):
        raise _bad("redfish_system_id", "must be a string such as /redfish/v1/Systems/1")
    if "://" in raw or "?" in raw or "#" in raw:
        raise _bad("redfish_system_id", f"{raw!r} must be a resource path such as "
                   "/redfish/v1/Systems/1 (or just the system's Id), not a URL")
    if raw.startswith("/"):
        return raw.rstrip("/") or raw
    return f"{root_prefix}Systems/{urllib.parse.quote(raw, safe='')}"


def parse_verify(raw) -> bool | str:
    """True/False, or a CA bundle file/directory that exists on this conductor."""
    if raw is None:
        return True
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str):
        if raw.strip().lower() in BOOL_WORDS:
            return BOOL_WORDS[raw.strip().lower()]
        if os.path.exists(raw):
            return raw
    raise _bad("redfish_verify_ca", f"{raw!r} is neither a boolean nor the path of an "
               "existing CA bundle file or directory on the conductor")


def _optional_string(info: dict, field: str) -> str | None:
    value = info.get(field)
    if value is not None and not isinstance(value, str):
        raise _bad(field, "must be a string")
    return value


def parse(driver_info: dict, default_auth: str = "auto") -> RedfishInfo:
    """Check a node's redfish_* fields; raises InvalidParameter naming the field."""
    base, root = parse_address(driver_info.get("redfish_address"))
    auth = driver_info.get("redfish_auth_type") or default_auth
    if auth not in AUTH_TYPES:
        raise _bad("redfish_auth_type", f"{auth!r} is not one of {', '.join(AUTH_TYPES)}")
    return RedfishInfo(
        address=base, root_prefix=root,
        system_id=parse_system_id(driver_info.get("redfish_system_id"), root),
        username=_optional_string(driver_info, "redfish_username"),
        password=_optional_string(driver_info, "redfish_password"),
        verify=parse_verify(driver_info.get("redfish_verify_ca")),
        auth_type=auth)
