"""How nodes and ports look on the wire, per microversion (fields, links, masking)."""
from __future__ import annotations

import datetime
import operator

import flask

from api.v1 import microversion
from conductor import errors
from conductor.secrets import mask
from conductor.service.model import INTERFACES, NODE_TIMESTAMPS

#: Node field -> the minor version that introduced it (Ironic's version history;
#: entries above 1.72 follow the later history as best known).
NODE_FIELD_VERSIONS = {
    "driver_internal_info": 3, "name": 5, "inspection_started_at": 6,
    "inspection_finished_at": 6, "clean_step": 7, "raid_config": 12,
    "target_raid_config": 12, "network_interface": 20, "resource_class": 21,
    **{f"{i}_interface": 31 for i in ("boot", "console", "deploy", "inspect",
                                      "management", "power", "raid", "vendor")},
    "storage_interface": 33, "traits": 37, "rescue_interface": 38,
    "bios_interface": 40, "fault": 42, "deploy_step": 44, "conductor_group": 46,
    "automated_clean": 47, "protected": 48, "protected_reason": 48, "conductor": 49,
    "owner": 50, "description": 51, "allocation_uuid": 52, "retired": 61,
    "retired_reason": 61, "lessee": 65, "network_data": 66, "boot_mode": 75,
    "secure_boot": 75, "shard": 82, "parent_node": 83, "firmware_interface": 86,
    "service_step": 87, "disable_power_off": 95, "instance_name": 104, "health": 109,
}
NODE_FIELDS = (
    "uuid", "name", "driver", "resource_class", "conductor_group", "conductor", "shard",
    "owner", "lessee", "description", "provision_state", "target_provision_state",
    "provision_updated_at", "last_error", "maintenance", "maintenance_reason", "fault",
    "reservation", "power_state", "target_power_state", "properties", "instance_info",
    "instance_uuid", "driver_info", "driver_internal_info", "extra", "clean_step",
    "deploy_step", "service_step", "raid_config", "target_raid_config", "traits",
    *[f"{i}_interface" for i in INTERFACES], "automated_clean", "protected",
    "protected_reason", "retired", "retired_reason", "boot_mode", "secure_boot",
    "console_enabled", "network_data", "parent_node", "allocation_uuid", "chassis_uuid",
    "created_at", "updated_at", "inspection_started_at", "inspection_finished_at",
    "health", "disable_power_off", "instance_name",
)
NODE_LIST_FIELDS = ("uuid", "name", "instance_uuid", "power_state", "provision_state",
                    "maintenance")
#: Columns the short list needs from the database (the rest is not loaded).
NODE_LIST_COLUMNS = NODE_LIST_FIELDS

PORT_FIELD_VERSIONS = {"internal_info": 18, "local_link_connection": 19,
                       "pxe_enabled": 19, "portgroup_uuid": 24, "physical_network": 34,
                       "is_smartnic": 53, "name": 88, "description": 97}
PORT_FIELDS = ("uuid", "address", "node_uuid", "portgroup_uuid", "pxe_enabled",
               "local_link_connection", "internal_info", "extra", "physical_network",
               "is_smartnic", "name", "description", "created_at", "updated_at")
PORT_LIST_FIELDS = ("uuid", "address")

_COMPUTED = {"conductor": "conductor_affinity"}


def base_url() -> str:
    public = flask.current_app.config.get("PUBLIC_ENDPOINT")
    return (public or flask.request.host_url).rstrip("/")


def links(kind: str, ident: str, base: str, sub: str = "") -> list[dict]:
    return [{"href": f"{base}/v1/{kind}/{ident}{sub}", "rel": "self"},
            {"href": f"{base}/{kind}/{ident}{sub}", "rel": "bookmark"}]


def mask_secrets(info: dict | None) -> dict | None:
    """Copy of ``info`` with every secret-looking value replaced by ******, nested
    keys too (conductor.secrets.mask)."""
    if not info:
        return info
    return mask(info)


def _iso(value):
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:  # stored as UTC; same text as .replace(tzinfo=utc)
            return value.isoformat() + "+00:00"
        return value.isoformat()
    return value


def visible(field: str, versions: dict) -> bool:
    return microversion.at_least(versions.get(field, 1))


def check_fields(requested: str | None, allowed: tuple, versions: dict) -> tuple | None:
    """Parse ``?fields=a,b``; unknown or too-new fields are a 400."""
    if requested is None:
        return None
    if not microversion.at_least(8):
        raise errors.NotAcceptable("The fields parameter requires API version 1.8 or later.")
    fields = tuple(f.strip() for f in requested.split(",") if f.strip())
    bad = [f for f in fields if f not in allowed or not visible(f, versions)]
    if bad:
        raise errors.InvalidParameter(f"Field(s) \"{', '.join(bad)}\" are not valid")
    return fields


def node_value(node, field: str):
    if field == "provision_state" and node.provision_state == "available" \
            and not microversion.at_least(2):
        return None  # before 1.2 "available" was shown as null (NOSTATE)
    if field in ("driver_info", "driver_internal_info", "instance_info"):
        return mask_secrets(getattr(node, field))
    if field == "traits":
        return node.traits or []
    if field == "health":
        return None
    return _iso(getattr(node, _COMPUTED.get(field, field)))


#: Node fields whose wire value is not the column value as read (see node_value).
_TIMESTAMPS = NODE_TIMESTAMPS
_MASKED = ("driver_info", "driver_internal_info", "instance_info")


class NodeView:
    """Renders nodes the way node_value does, for many nodes of one request.

    The visible fields and the microversion checks are worked out once per request,
    not once per field and node: a 1000-node detail page spent most of its time there.
    """

    def __init__(self, fields=None, base: str | None = None):
        self.base = base or base_url()
        self.full = fields is None
        self.names = fields or [f for f in NODE_FIELDS if visible(f, NODE_FIELD_VERSIONS)]
        # health is not stored: its slot is read from any column, then set to None.
        attrs = [_COMPUTED.get(n, "uuid" if n == "health" else n) for n in self.names]
        get = operator.attrgetter(*attrs)
        self._get = get if len(attrs) > 1 else (lambda node: (get(node),))
        self._iso = [n for n in self.names if n in _TIMESTAMPS]
        self._masked = [n for n in self.names if n in _MASKED]
        self._traits = "traits" in self.names
        self._health = "health" in self.names
        self._nostate = "provision_state" in self.names and not microversion.at_least(2)
        # A node's conductor is the hash ring's choice among the live conductors
        # (conductor/cluster/ring.py), None when none serves its driver and group.
        self._conductor = flask.current_app.extensions["metalcast.service"].conductors \
            .shown_conductor if "conductor" in self.names else None

    def render(self, node) -> dict:
        out = dict(zip(self.names, self._get(node)))
        for name in self._iso:
            out[name] = _iso(out[name])
        for name in self._masked:
            out[name] = mask_secrets(out[name])
        if self._traits:
            out["traits"] = out["traits"] or []
        if self._health:
            out["health"] = None
        if self._nostate and out["provision_state"] == "available":
            out["provision_state"] = None  # before 1.2 "available" was shown as null
        if self._conductor is not None:
            out["conductor"] = self._conductor(node)
        out["links"] = links("nodes", node.uuid, self.base)
        if self.full:
            for sub in ("ports", "portgroups", "states", "volume"):
                out[sub] = links("nodes", node.uuid, self.base, f"/{sub}")
        return out


def node_dict(node, fields=None, base: str | None = None) -> dict:
    return NodeView(fields, base).render(node)


def node_dicts(found, fields=None, base: str | None = None) -> list[dict]:
    view = NodeView(fields, base)
    return [view.render(node) for node in found]


def port_dict(port, fields=None, base: str | None = None) -> dict:
    base = base or base_url()
    names = fields or [f for f in PORT_FIELDS if visible(f, PORT_FIELD_VERSIONS)]
    out = {name: _iso(getattr(port, name, None)) for name in names}
    out["links"] = links("ports", port.uuid, base)
    return out


def node_states(node) -> dict:
    keys = ("power_state", "target_power_state", "provision_state",
            "target_provision_state", "provision_updated_at", "last_error",
            "console_enabled", "raid_config", "target_raid_config", "fault",
            "boot_mode", "secure_boot")
    return {k: node_value(node, k) for k in keys if visible(k, NODE_FIELD_VERSIONS)}
