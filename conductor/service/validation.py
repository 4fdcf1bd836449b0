"""Parsing of outside input (API bodies, enrolment files) into clean column values.

Tables of field -> parser; a parser returns the normalised value or raises Invalid.
"""
from __future__ import annotations

import re

import jsonpatch
import jsonpointer

from conductor import errors
from conductor.db.queries import is_uuid_like
from conductor.db.schema import INTERFACES

_NAME_RE = re.compile(r"^[A-Za-z0-9\-._~]+$")
_MAC_RE = re.compile(r"^([0-9a-f]{2})[:-]?([0-9a-f]{2})[:-]?([0-9a-f]{2})[:-]?"
                     r"([0-9a-f]{2})[:-]?([0-9a-f]{2})[:-]?([0-9a-f]{2})$")
_LLC_KEYS = {"switch_id", "port_id", "switch_info", "hostname", "network_type"}


def _bad(field: str, why: str):
    return errors.InvalidParameter(f"Invalid value for {field}: {why}")


def node_name(value, field="name"):
    if value is None:
        return None
    if (not isinstance(value, str) or not 0 < len(value) <= 255
            or not _NAME_RE.match(value) or is_uuid_like(value)):
        raise _bad(field, f"{value!r} is not a valid node name: use 1-255 characters from "
                          "A-Z a-z 0-9 - . _ ~ and not a UUID")
    return value


def uuid_value(value, field="uuid"):
    if value is None:
        return None
    if not is_uuid_like(value):
        raise errors.InvalidParameter(f"Expected a UUID for {field} but received {value!r}.")
    return str(value).lower()


def mac_address(value, field="address"):
    """Normalise a MAC to lower-case colon form; accepts ':' '-' or no separators."""
    match = _MAC_RE.match(value.strip().lower()) if isinstance(value, str) else None
    if not match:
        raise errors.InvalidParameter(f"Expected a MAC address but received {value!r}.")
    return ":".join(match.groups())


def string(max_len=255, nullable=True):
    def parse(value, field):
        if value is None and nullable:
            return None
        if not isinstance(value, str) or len(value) > max_len:
            raise _bad(field, f"expected a string of at most {max_len} characters")
        return value
    return parse


def text(value, field):
    if value is not None and not isinstance(value, str):
        raise _bad(field, "expected a string")
    return value


def dictionary(value, field):
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _bad(field, f"expected a JSON object, got {type(value).__name__}")
    return value


def boolean(nullable=False):
    def parse(value, field):
        if value is None and nullable:
            return None
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
            return value.lower() in ("true", "1")
        raise _bad(field, f"expected a boolean, got {value!r}")
    return parse


def local_link(value, field):
    value = dictionary(value, field)
    unknown = set(value) - _LLC_KEYS
    if unknown:
        raise _bad(field, f"unknown keys {sorted(unknown)}; allowed: {sorted(_LLC_KEYS)}")
    not_text = sorted(k for k, v in value.items() if not isinstance(v, str))
    if not_text:  # Ironic's values are all strings (a MAC, a port name, ...)
        raise _bad(field, f"the values of {not_text} must be strings")
    return value


#: Node fields a client may set on create (and, except uuid, change by PATCH).
NODE_FIELDS = {
    "uuid": lambda v, f: uuid_value(v, f), "name": lambda v, f: node_name(v, f),
    "driver": string(255, nullable=False), "description": text,
    "properties": dictionary, "instance_info": dictionary, "driver_info": dictionary,
    "extra": dictionary, "network_data": dictionary,
    "instance_uuid": lambda v, f: uuid_value(v, f),
    "chassis_uuid": lambda v, f: uuid_value(v, f),
    "resource_class": string(80), "conductor_group": string(255, nullable=False),
    "owner": string(255), "lessee": string(255), "shard": string(255),
    "parent_node": string(255), "instance_name": string(255),
    "automated_clean": boolean(nullable=True), "retired": boolean(),
    "retired_reason": text, "protected": boolean(), "protected_reason": text,
    "disable_power_off": boolean(), "maintenance": boolean(),
    "maintenance_reason": text,
    **{f"{i}_interface": string(255) for i in INTERFACES},
}
NODE_CREATE_ONLY = {"uuid"}
NODE_PATCH_ONLY = {"protected", "protected_reason", "maintenance", "maintenance_reason"}
NODE_MANDATORY = {"driver"}

PORT_FIELDS = {
    "uuid": lambda v, f: uuid_value(v, f), "address": lambda v, f: mac_address(v, f),
    "node_uuid": lambda v, f: uuid_value(v, f), "pxe_enabled": boolean(),
    "local_link_connection": local_link, "extra": dictionary,
    "physical_network": string(64), "is_smartnic": boolean(), "name": string(255),
    "description": text,
}
PORT_MANDATORY = {"address", "node_uuid"}


def parse_fields(body, table: dict, what: str, mandatory=(), forbidden=()) -> dict:
    """Validate a create body against ``table``; unknown or read-only fields are 400."""
    if not isinstance(body, dict):
        raise errors.InvalidParameter(f"The {what} must be a JSON object.")
    values = {}
    for key, value in body.items():
        if key not in table or key in forbidden:
            raise errors.InvalidParameter(f"Unknown attribute for argument {what}: {key}")
        values[key] = table[key](value, key)
    missing = [m for m in mandatory if values.get(m) in (None, "")]
    if missing:
        raise errors.InvalidParameter(f"Mandatory field missing for {what}: "
                                      f"{', '.join(missing)}")
    return values


def apply_patch(doc: dict, patch, table: dict, mandatory=()) -> dict:
    """Apply an RFC 6902 patch to ``doc`` (column values); return the changed columns."""
    if not isinstance(patch, list) or not all(isinstance(p, dict) for p in patch):
        raise errors.InvalidParameter("The patch must be a JSON list of operations.")
    for op in patch:
        path = op.get("path")
        if not isinstance(path, str) or not path.startswith("/") or path == "/":
            raise errors.InvalidParameter(f"Invalid patch path {path!r}.")
        root = path.split("/")[1]
        if root not in table:
            raise errors.InvalidParameter(
                f"'/{root}' is an internal attribute and can not be updated")
        if op.get("op") == "remove" and path == f"/{root}" and root in mandatory:
            raise errors.InvalidParameter(
                f"'/{root}' is a mandatory attribute and can not be removed")
    try:
        patched = jsonpatch.apply_patch(doc, patch)
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException,
            TypeError, ValueError) as exc:
        raise errors.InvalidParameter(f"Could not apply the patch: {exc}") from None
    changed = {}
    for key in table:
        value = patched.get(key)
        if value != doc.get(key) or (key not in patched and key in doc):
            changed[key] = table[key](value, key)
    return changed
