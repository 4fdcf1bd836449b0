"""The ramdisk endpoints: ``GET /v1/lookup`` and ``POST /v1/heartbeat/<node>``.

Open to the ramdisk without API credentials (Ironic's ramdisk policy): the agent
token from lookup is what authenticates a heartbeat. Both need API >= 1.22 (a
404 below, as Ironic); heartbeat fields appear with the versions Ironic added them.
A host agent heartbeats here too (``agent_mode: "host"``), with a token issued by
the authenticated vendor passthru (api/v1/nodes.py); lookup never answers it.
"""
from __future__ import annotations

import flask

from api import common
from api.v1 import microversion, views
from conductor import errors
from conductor.service.ramdisk import Heartbeat

bp = flask.Blueprint("agent", __name__, url_prefix="/v1")

RAMDISK_MIN_VERSION = 22
#: Heartbeat field -> the minor version that introduced it.
HEARTBEAT_FIELD_VERSIONS = {"callback_url": 22, "agent_token": 22, "agent_version": 36,
                            "agent_verify_ca": 68, "agent_status": 72,
                            "agent_status_message": 72}
#: Host-mode fields (conductor/patching/host_channel.py; Ironic agents never send them) -> type.
HOST_HEARTBEAT_FIELDS = {"agent_mode": str, "patching": dict}
#: The node fields lookup returns besides uuid and links (Ironic's _LOOKUP_RETURN_FIELDS).
LOOKUP_DICT_FIELDS = ("properties", "instance_info", "driver_internal_info")


def _ramdisk_endpoints_allowed() -> None:
    if not microversion.at_least(RAMDISK_MIN_VERSION):
        raise errors.NotFound()


def agent_service():
    return common.service().agent


@bp.get("/lookup")
def lookup():
    _ramdisk_endpoints_allowed()
    addresses = [a for a in flask.request.args.get("addresses", "").split(",") if a.strip()]
    node_uuid = flask.request.args.get("node_uuid") or None
    # Older host agents sent agent_mode=host: answered as an unknown node.
    mode = flask.request.args.get("agent_mode")
    node, token = agent_service().lookup(addresses, node_uuid, mode)
    shown = {"uuid": node.uuid}
    shown.update({field: views.mask_secrets(getattr(node, field)) or {}
                  for field in LOOKUP_DICT_FIELDS})
    shown["links"] = views.links("nodes", node.uuid, views.base_url())
    return {"node": shown, "config": agent_service().lookup_config(node, token)}


@bp.delete("/nodes/<node_ident>/host_agent_token")
def reset_host_agent_token(node_ident):
    """Operator action (API credentials needed): revoke a host agent's token and its
    binding; ``issue_host_agent_token`` (vendor passthru) issues the next one
    (conductor/patching/host_channel.py)."""
    if agent_service().host_agents is None:
        raise errors.NotFound()
    agent_service().host_agents.reset_token(node_ident)
    return "", 204


@bp.post("/heartbeat/<node_ident>")
def heartbeat(node_ident):
    _ramdisk_endpoints_allowed()
    body = common.json_body()
    host = {field: body.pop(field) for field in HOST_HEARTBEAT_FIELDS if field in body}
    for field, kind in HOST_HEARTBEAT_FIELDS.items():
        if host.get(field) is not None and not isinstance(host[field], kind):
            raise errors.InvalidParameter(f'Field "{field}" has the wrong type.')
    if host and host.get("agent_mode") != "host":
        raise errors.InvalidParameter('"patching" needs "agent_mode": "host".')
    for field, value in body.items():
        minor = HEARTBEAT_FIELD_VERSIONS.get(field)
        if minor is None or not microversion.at_least(minor):
            raise errors.InvalidParameter(f'Field "{field}" not recognised in this version.')
        if value is not None and not isinstance(value, str):
            raise errors.InvalidParameter(f'Field "{field}" must be a string.')
    if not body.get("callback_url"):
        raise errors.InvalidParameter('Field "callback_url" is required.')
    if host:
        if agent_service().host_agents is None:
            raise errors.NotFound()
        agent_service().host_agents.heartbeat(node_ident, Heartbeat(**body),
                                              host.get("patching"))
    else:
        agent_service().heartbeat(node_ident, Heartbeat(**body))
    return "", 202
