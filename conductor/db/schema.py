"""Tables. SQLAlchemy Core: the conductor reads rows into typed records (records.py)."""
from __future__ import annotations

from typing import Any

import sqlalchemy as sa

metadata = sa.MetaData(naming_convention={
    "ix": "ix_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
})

#: The 13 hardware interfaces a node chooses, in Ironic's order.
INTERFACES = ("bios", "boot", "console", "deploy", "firmware", "inspect", "management",
              "network", "power", "raid", "rescue", "storage", "vendor")

_TS = sa.DateTime(timezone=True)


def _json(name: str) -> sa.Column[Any]:
    return sa.Column(name, sa.JSON, nullable=True)


nodes = sa.Table(
    "nodes", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("uuid", sa.String(36), nullable=False, unique=True),
    sa.Column("name", sa.String(255), nullable=True, unique=True),
    sa.Column("driver", sa.String(255), nullable=False),
    *[sa.Column(f"{i}_interface", sa.String(255), nullable=True) for i in INTERFACES],
    sa.Column("provision_state", sa.String(15), nullable=True, index=True),
    sa.Column("target_provision_state", sa.String(15), nullable=True),
    sa.Column("provision_updated_at", _TS, nullable=True),
    sa.Column("power_state", sa.String(15), nullable=True),
    sa.Column("target_power_state", sa.String(15), nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("maintenance", sa.Boolean, nullable=False, default=False),
    sa.Column("maintenance_reason", sa.Text, nullable=True),
    sa.Column("fault", sa.String(255), nullable=True),
    sa.Column("reservation", sa.String(255), nullable=True, index=True),
    sa.Column("conductor_affinity", sa.String(255), nullable=True, index=True),
    sa.Column("conductor_group", sa.String(255), nullable=False, default=""),
    sa.Column("resource_class", sa.String(80), nullable=True, index=True),
    sa.Column("owner", sa.String(255), nullable=True, index=True),
    sa.Column("lessee", sa.String(255), nullable=True),
    sa.Column("description", sa.Text, nullable=True),
    sa.Column("instance_uuid", sa.String(36), nullable=True, unique=True),
    sa.Column("instance_name", sa.String(255), nullable=True),
    sa.Column("chassis_uuid", sa.String(36), nullable=True),
    sa.Column("allocation_uuid", sa.String(36), nullable=True),
    sa.Column("shard", sa.String(255), nullable=True),
    sa.Column("parent_node", sa.String(36), nullable=True),
    _json("properties"), _json("instance_info"), _json("driver_info"),
    _json("driver_internal_info"), _json("extra"), _json("clean_step"),
    _json("deploy_step"), _json("service_step"), _json("raid_config"),
    _json("target_raid_config"), _json("traits"), _json("network_data"),
    sa.Column("automated_clean", sa.Boolean, nullable=True),
    sa.Column("protected", sa.Boolean, nullable=False, default=False),
    sa.Column("protected_reason", sa.Text, nullable=True),
    sa.Column("retired", sa.Boolean, nullable=False, default=False),
    sa.Column("retired_reason", sa.Text, nullable=True),
    sa.Column("boot_mode", sa.String(16), nullable=True),
    sa.Column("secure_boot", sa.Boolean, nullable=True),
    sa.Column("console_enabled", sa.Boolean, nullable=False, default=False),
    sa.Column("disable_power_off", sa.Boolean, nullable=False, default=False),
    sa.Column("inspection_started_at", _TS, nullable=True),
    sa.Column("inspection_finished_at", _TS, nullable=True),
    sa.Column("created_at", _TS, nullable=False),
    sa.Column("updated_at", _TS, nullable=True),
    # The fleet's counts (/metrics' metalcast_nodes, the console's fleet page) GROUP BY
    # these four: read from this index alone, 10,000 nodes take ~1.5 ms, not ~10 ms.
    sa.Index("ix_nodes_states", "provision_state", "power_state", "maintenance", "fault"),
    # The console's change publisher asks for the nodes written since its last look
    # five times a second: only those rows are read (conductor/db/fleet.py).
    sa.Index("ix_nodes_updated_at", "updated_at"),
)

ports = sa.Table(
    "ports", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("uuid", sa.String(36), nullable=False, unique=True),
    sa.Column("address", sa.String(18), nullable=False, unique=True),
    sa.Column("node_id", sa.Integer, sa.ForeignKey("nodes.id", ondelete="CASCADE"),
              nullable=False, index=True),
    sa.Column("name", sa.String(255), nullable=True),
    sa.Column("description", sa.Text, nullable=True),
    sa.Column("pxe_enabled", sa.Boolean, nullable=False, default=True),
    sa.Column("physical_network", sa.String(64), nullable=True),
    sa.Column("is_smartnic", sa.Boolean, nullable=False, default=False),
    _json("local_link_connection"), _json("extra"), _json("internal_info"),
    sa.Column("created_at", _TS, nullable=False),
    sa.Column("updated_at", _TS, nullable=True),
)

conductors = sa.Table(
    "conductors", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("hostname", sa.String(255), nullable=False, unique=True),
    sa.Column("conductor_group", sa.String(255), nullable=False, default=""),
    sa.Column("online", sa.Boolean, nullable=False, default=True),
    sa.Column("hardware_types", sa.JSON, nullable=True),
    sa.Column("created_at", _TS, nullable=False),
    sa.Column("updated_at", _TS, nullable=True),
)

#: DNS records of deleted nodes still to be removed (conductor/dns/removals.py): the
#: node row is gone, so the retry lives here until the removal succeeds.
dns_pending_removals = sa.Table(
    "dns_pending_removals", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("node_uuid", sa.String(36), nullable=False, index=True),
    sa.Column("node_name", sa.String(255), nullable=True),
    sa.Column("zone", sa.String(255), nullable=False, default=""),
    _json("records"),   # [{"label", "fqdn", "addresses"}], as dns_registration.HostRecords
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("next_attempt_at", _TS, nullable=False, index=True),
    sa.Column("created_at", _TS, nullable=False),
    sa.Column("updated_at", _TS, nullable=True),
)

#: Patch state of installed hosts as their agents last reported it, plus what the
#: controller adds (interim patches, a sent install request): the source of truth of
#: query-hosts for every conductor, kept across restarts (conductor/patching/host_states.py).
patch_hosts = sa.Table(
    "patch_hosts", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("hostname", sa.String(255), nullable=False, unique=True),
    sa.Column("ip", sa.String(255), nullable=False, default=""),
    sa.Column("nodetype", sa.String(64), nullable=False, default="controller"),
    _json("subfunctions"),
    sa.Column("sw_version", sa.String(64), nullable=False, default=""),
    sa.Column("state", sa.String(32), nullable=False, default="idle"),
    sa.Column("out_of_date", sa.Boolean, nullable=False, default=False),
    sa.Column("node_is_patched", sa.Boolean, nullable=False, default=False),
    sa.Column("patch_failed", sa.Boolean, nullable=False, default=False),
    _json("installed"), _json("to_remove"), _json("missing_pkgs"), _json("duplicated_pkgs"),
    _json("interim"),     # patch IDs applied or removed since the host's last report
    sa.Column("install_request", sa.String(64), nullable=True),
    sa.Column("install_sent_at", _TS, nullable=True),
    sa.Column("last_seen_at", _TS, nullable=True),
    # A new random value on every write: a conductor re-reads only rows whose revision
    # differs from the one it holds, and writes only over the revision it read.
    sa.Column("revision", sa.String(32), nullable=False),
    sa.Column("created_at", _TS, nullable=False),
    sa.Column("updated_at", _TS, nullable=True),
)

#: Identity v3 tokens (POST /v3/auth/tokens, conductor/identity.py). Only the SHA-256 of
#: a token is stored, so a copy of the database logs nobody in; every API process on the
#: database accepts a token another one issued, and a revocation is seen by all of them.
identity_tokens = sa.Table(
    "identity_tokens", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("audit_id", sa.String(32), nullable=False),
    sa.Column("user_name", sa.String(255), nullable=False),
    sa.Column("project_name", sa.String(255), nullable=True),   # None: unscoped
    _json("methods"),
    # The SHA-256 of the user's htpasswd entry at login: a new password or a removed
    # user ends the token, as Keystone revokes tokens on a password change.
    sa.Column("credential", sa.String(64), nullable=False),
    sa.Column("issued_at", _TS, nullable=False),
    sa.Column("expires_at", _TS, nullable=False, index=True),
    sa.Column("revoked_at", _TS, nullable=True),
)

#: The one sw-update strategy (conductor/orchestration/): StarlingX's VIM holds exactly
#: one across every strategy type, so ``slot`` is always 1 and unique, and a second
#: create loses on the constraint whichever conductor runs it. ``document`` is the whole
#: strategy (phases, stages, steps and what each running step has done so far); the
#: conductor running it (``owner``) touches ``owner_seen_at``, so a restarted or another
#: conductor takes it over when that stops.
sw_update_strategies = sa.Table(
    "sw_update_strategies", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("slot", sa.Integer, nullable=False, unique=True, default=1),
    sa.Column("uuid", sa.String(36), nullable=False, unique=True),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("state", sa.String(32), nullable=False),
    _json("document"),
    sa.Column("revision", sa.String(32), nullable=False),
    sa.Column("owner", sa.String(255), nullable=True),
    sa.Column("owner_seen_at", _TS, nullable=True),
    sa.Column("created_at", _TS, nullable=False),
    sa.Column("updated_at", _TS, nullable=True),
)

#: Ironic's node history (``GET /v1/nodes/{node}/history``, API 1.78): one row per event
#: an operator wants to see later (a provision state change, an error), kept apart from
#: the node row so a node's page can show how it got where it is. Rows go with the node.
node_history = sa.Table(
    "node_history", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("uuid", sa.String(36), nullable=False, unique=True),
    sa.Column("node_id", sa.Integer, sa.ForeignKey("nodes.id", ondelete="CASCADE"),
              nullable=False, index=True),
    sa.Column("conductor", sa.String(255), nullable=True),
    sa.Column("event_type", sa.String(255), nullable=True),
    sa.Column("severity", sa.String(255), nullable=True),
    sa.Column("event", sa.Text, nullable=True),
    sa.Column("user", sa.String(32), nullable=True),
    sa.Column("created_at", _TS, nullable=False),
    sa.Column("updated_at", _TS, nullable=True),
)

# -- image updates (conductor/updates/, migration 0007) ----------------------------------
#: A full OS image of an Omaha application (appid), stored content-addressed in the data
#: dir (<data>/updates/payloads/<sha256>); ``signature`` is the base64 Ed25519 signature
#: of ramdisk_agent/wire/image_signature.py; ``channel`` is where it was uploaded to
#: (deltas are built from the earlier images of the same channel).
update_images = sa.Table(
    "update_images", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("appid", sa.String(64), nullable=False),
    sa.Column("version", sa.String(64), nullable=False),
    sa.Column("channel", sa.String(64), nullable=True),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("signature", sa.String(128), nullable=False),
    sa.Column("created_at", _TS, nullable=False),
    sa.UniqueConstraint("appid", "version"),
)

#: A signed delta payload from one version to another (built in the background:
#: state pending, building, ready or error).
update_deltas = sa.Table(
    "update_deltas", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("appid", sa.String(64), nullable=False),
    sa.Column("from_version", sa.String(64), nullable=False),
    sa.Column("to_version", sa.String(64), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=True),
    sa.Column("size", sa.BigInteger, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("created_at", _TS, nullable=False),
    sa.Column("updated_at", _TS, nullable=True),
    sa.UniqueConstraint("appid", "from_version", "to_version"),
)

#: A channel points at one version of its application (Nebraska's model, spec §2.4).
update_channels = sa.Table(
    "update_channels", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("appid", sa.String(64), nullable=False),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("version", sa.String(64), nullable=True),
    sa.Column("created_at", _TS, nullable=False),
    sa.Column("updated_at", _TS, nullable=True),
    sa.UniqueConstraint("appid", "name"),
)

#: A group (the Omaha ``track``) follows a channel under a rollout policy
#: (conductor/updates/policy.py); ``period_start``/``period_grants`` count the grants
#: of the current period, raised by one conditional UPDATE per grant.
update_groups = sa.Table(
    "update_groups", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("appid", sa.String(64), nullable=False),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("channel", sa.String(64), nullable=False),
    sa.Column("updates_enabled", sa.Boolean, nullable=False),
    sa.Column("safe_mode", sa.Boolean, nullable=False),
    sa.Column("max_updates_per_period", sa.Integer, nullable=False),
    sa.Column("period_interval", sa.Integer, nullable=False),
    sa.Column("update_timeout", sa.Integer, nullable=False),
    sa.Column("office_hours", sa.Boolean, nullable=False),
    sa.Column("window_start", sa.String(16), nullable=True),
    sa.Column("window_length", sa.Integer, nullable=True),
    sa.Column("timezone", sa.String(64), nullable=False),
    sa.Column("rollout_percent", sa.Integer, nullable=False),
    _json("floors"),
    sa.Column("halted_reason", sa.Text, nullable=True),
    sa.Column("period_start", _TS, nullable=True),
    sa.Column("period_grants", sa.Integer, nullable=False),
    sa.Column("created_at", _TS, nullable=False),
    sa.Column("updated_at", _TS, nullable=True),
    sa.UniqueConstraint("appid", "name"),
)

#: One row per (machine id, application): a client can never add more rows than that.
update_instances = sa.Table(
    "update_instances", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("machineid", sa.String(64), nullable=False),
    sa.Column("appid", sa.String(64), nullable=False),
    sa.Column("group_name", sa.String(64), nullable=False, index=True),
    sa.Column("version", sa.String(64), nullable=False),
    sa.Column("node_uuid", sa.String(36), nullable=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("target_version", sa.String(64), nullable=True),
    sa.Column("error_code", sa.BigInteger, nullable=True),
    sa.Column("error_text", sa.Text, nullable=True),
    sa.Column("granted_at", _TS, nullable=True),
    sa.Column("last_check_at", _TS, nullable=True),
    sa.Column("created_at", _TS, nullable=False),
    sa.Column("updated_at", _TS, nullable=True),
    sa.UniqueConstraint("machineid", "appid"),
)

#: An instance's history (status changes), capped per instance (conductor/db/updates.py).
update_instance_events = sa.Table(
    "update_instance_events", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("instance_id", sa.Integer,
              sa.ForeignKey("update_instances.id", ondelete="CASCADE"),
              nullable=False, index=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("version", sa.String(64), nullable=True),
    sa.Column("error_code", sa.BigInteger, nullable=True),
    sa.Column("text", sa.Text, nullable=True),
    sa.Column("created_at", _TS, nullable=False),
)

#: Reboot lease groups (locksmith's semaphore): every acquire first bumps ``generation``
#: of its group's row, which serialises acquirers of one group on every database.
update_lease_groups = sa.Table(
    "update_lease_groups", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("max_holders", sa.Integer, nullable=False),
    sa.Column("generation", sa.Integer, nullable=False),
    sa.Column("updated_at", _TS, nullable=True),
)

update_leases = sa.Table(
    "update_leases", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("group_name", sa.String(64), nullable=False),
    sa.Column("holder", sa.String(36), nullable=False),
    sa.Column("acquired_at", _TS, nullable=False),
    sa.Column("expires_at", _TS, nullable=False),
    sa.UniqueConstraint("group_name", "holder"),
)
