"""Typed records for rows: Node, Port, DnsRemoval, PatchHost, IdentityToken; one attribute
per column, in table order (queries build them positionally from rows: ``Node(*row)``).

schema.py stays the single source of truth: a record whose fields differ from its
table's columns (a column added to one and not the other) fails at import, below.
JSON columns are ``Any``: they hold whatever JSON the API stored. A partial record
(``Store.list_nodes(columns=...)``) leaves the attributes it did not read None.
The conductor and the API pass these around, never raw rows or dicts.
"""
from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from conductor.db import schema

#: The default of every field: None, typed Any so that a non-null column keeps its type.
_UNSET: Any = None


@dataclasses.dataclass(slots=True)
class Node:
    """One bare-metal node as stored."""

    id: int = _UNSET
    uuid: str = _UNSET
    name: str | None = _UNSET
    driver: str = _UNSET
    bios_interface: str | None = _UNSET
    boot_interface: str | None = _UNSET
    console_interface: str | None = _UNSET
    deploy_interface: str | None = _UNSET
    firmware_interface: str | None = _UNSET
    inspect_interface: str | None = _UNSET
    management_interface: str | None = _UNSET
    network_interface: str | None = _UNSET
    power_interface: str | None = _UNSET
    raid_interface: str | None = _UNSET
    rescue_interface: str | None = _UNSET
    storage_interface: str | None = _UNSET
    vendor_interface: str | None = _UNSET
    provision_state: str | None = _UNSET
    target_provision_state: str | None = _UNSET
    provision_updated_at: datetime.datetime | None = _UNSET
    power_state: str | None = _UNSET
    target_power_state: str | None = _UNSET
    last_error: str | None = _UNSET
    maintenance: bool = _UNSET
    maintenance_reason: str | None = _UNSET
    fault: str | None = _UNSET
    reservation: str | None = _UNSET
    conductor_affinity: str | None = _UNSET
    conductor_group: str = _UNSET
    resource_class: str | None = _UNSET
    owner: str | None = _UNSET
    lessee: str | None = _UNSET
    description: str | None = _UNSET
    instance_uuid: str | None = _UNSET
    instance_name: str | None = _UNSET
    chassis_uuid: str | None = _UNSET
    allocation_uuid: str | None = _UNSET
    shard: str | None = _UNSET
    parent_node: str | None = _UNSET
    properties: Any = _UNSET
    instance_info: Any = _UNSET
    driver_info: Any = _UNSET
    driver_internal_info: Any = _UNSET
    extra: Any = _UNSET
    clean_step: Any = _UNSET
    deploy_step: Any = _UNSET
    service_step: Any = _UNSET
    raid_config: Any = _UNSET
    target_raid_config: Any = _UNSET
    traits: Any = _UNSET
    network_data: Any = _UNSET
    automated_clean: bool | None = _UNSET
    protected: bool = _UNSET
    protected_reason: str | None = _UNSET
    retired: bool = _UNSET
    retired_reason: str | None = _UNSET
    boot_mode: str | None = _UNSET
    secure_boot: bool | None = _UNSET
    console_enabled: bool = _UNSET
    disable_power_off: bool = _UNSET
    inspection_started_at: datetime.datetime | None = _UNSET
    inspection_finished_at: datetime.datetime | None = _UNSET
    created_at: datetime.datetime = _UNSET
    updated_at: datetime.datetime | None = _UNSET


@dataclasses.dataclass(slots=True)
class Port:
    """One NIC (MAC address) of a node; ``node_uuid`` is joined from nodes."""

    id: int = _UNSET
    uuid: str = _UNSET
    address: str = _UNSET
    node_id: int = _UNSET
    name: str | None = _UNSET
    description: str | None = _UNSET
    pxe_enabled: bool = _UNSET
    physical_network: str | None = _UNSET
    is_smartnic: bool = _UNSET
    local_link_connection: Any = _UNSET
    extra: Any = _UNSET
    internal_info: Any = _UNSET
    created_at: datetime.datetime = _UNSET
    updated_at: datetime.datetime | None = _UNSET
    node_uuid: str = _UNSET


@dataclasses.dataclass(slots=True)
class DnsRemoval:
    """DNS records of a deleted node that are still to be removed."""

    id: int = _UNSET
    node_uuid: str = _UNSET
    node_name: str | None = _UNSET
    zone: str = _UNSET
    records: Any = _UNSET
    attempts: int = _UNSET
    last_error: str | None = _UNSET
    next_attempt_at: datetime.datetime = _UNSET
    created_at: datetime.datetime = _UNSET
    updated_at: datetime.datetime | None = _UNSET


@dataclasses.dataclass(slots=True)
class PatchHost:
    """One installed host's patch state (conductor/patching/host_states.py)."""

    id: int = _UNSET
    hostname: str = _UNSET
    ip: str = _UNSET
    nodetype: str = _UNSET
    subfunctions: Any = _UNSET
    sw_version: str = _UNSET
    state: str = _UNSET
    out_of_date: bool = _UNSET
    node_is_patched: bool = _UNSET
    patch_failed: bool = _UNSET
    installed: Any = _UNSET
    to_remove: Any = _UNSET
    missing_pkgs: Any = _UNSET
    duplicated_pkgs: Any = _UNSET
    interim: Any = _UNSET
    install_request: str | None = _UNSET
    install_sent_at: datetime.datetime | None = _UNSET
    last_seen_at: datetime.datetime | None = _UNSET
    revision: str = _UNSET
    created_at: datetime.datetime = _UNSET
    updated_at: datetime.datetime | None = _UNSET


@dataclasses.dataclass(slots=True)
class IdentityToken:
    """One Identity v3 token as stored: its SHA-256, never the token (conductor/identity.py)."""

    id: int = _UNSET
    token_hash: str = _UNSET
    audit_id: str = _UNSET
    user_name: str = _UNSET
    project_name: str | None = _UNSET
    methods: Any = _UNSET
    credential: str = _UNSET
    issued_at: datetime.datetime = _UNSET
    expires_at: datetime.datetime = _UNSET
    revoked_at: datetime.datetime | None = _UNSET


@dataclasses.dataclass(slots=True)
class NodeHistory:
    """One event of a node's history (Ironic API 1.78): a provision state change or an
    error, with the conductor that saw it (conductor/db/history.py)."""

    id: int = _UNSET
    uuid: str = _UNSET
    node_id: int = _UNSET
    conductor: str | None = _UNSET
    event_type: str | None = _UNSET
    severity: str | None = _UNSET
    event: str | None = _UNSET
    user: str | None = _UNSET
    created_at: datetime.datetime = _UNSET
    updated_at: datetime.datetime | None = _UNSET


def _check(record: type, table: sa.Table, extra: Sequence[str] = ()) -> None:
    names = tuple(f.name for f in dataclasses.fields(record))
    columns = tuple(c.name for c in table.columns) + tuple(extra)
    if names != columns:
        raise TypeError(f"conductor.db.records.{record.__name__} does not match table "
                        f"{table.name}: fields {names}, columns {columns}")


_check(Node, schema.nodes)
_check(Port, schema.ports, extra=("node_uuid",))
_check(DnsRemoval, schema.dns_pending_removals)
_check(PatchHost, schema.patch_hosts)
_check(IdentityToken, schema.identity_tokens)
_check(NodeHistory, schema.node_history)

NODE_COLUMNS = tuple(c.name for c in schema.nodes.columns)
PORT_COLUMNS = tuple(c.name for c in schema.ports.columns)


def node_from_row(row: Sequence[Any]) -> Node:
    return Node(*row)


def interface_of(node: Node, kind: str) -> str | None:
    """The implementation name a node uses for interface ``kind``."""
    value: str | None = getattr(node, f"{kind}_interface")
    return value
