"""``/v1/nodes``: thin views over the conductor service facade."""
from __future__ import annotations

import flask

from api import common
from api.v1 import microversion, views
from conductor import errors
from conductor.service.model import SORTABLE_NODE_KEYS
from conductor.states import VERB_MIN_VERSION

bp = flask.Blueprint("nodes", __name__, url_prefix="/v1/nodes")


#: Query parameter -> (minimum minor version, store filter key, parser).
FILTERS = {
    "provision_state": (9, "provision_state", str),
    "driver": (16, "driver", str),
    "resource_class": (21, "resource_class", str),
    "fault": (42, "fault", str),
    "conductor_group": (46, "conductor_group", str),
    "conductor": (49, "conductor", str),     # the hash ring's choice (service.conductors)
    "owner": (50, "owner", str),
    "lessee": (65, "lessee", str),
    "shard": (82, "shard", str),
    "parent_node": (83, "parent_node", str),
    "instance_uuid": (1, "instance_uuid", str),
    "chassis_uuid": (1, "chassis_uuid", str),
    "maintenance": (1, "maintenance", common.bool_arg),
    "retired": (61, "retired", common.bool_arg),
    "associated": (1, "associated", common.bool_arg),
    "description_contains": (51, "description_contains", str),
    "instance_name": (104, "instance_name", str),
}


def _filters() -> dict:
    found = {}
    for name, (minor, key, parse) in FILTERS.items():
        value = flask.request.args.get(name)
        if value is None:
            continue
        if not microversion.at_least(minor):
            raise errors.NotAcceptable(f"Filtering by {name} requires API version 1.{minor}.")
        found[key] = parse(name) if parse is common.bool_arg else value
    return found


def _sort() -> tuple[str, str]:
    key = flask.request.args.get("sort_key", "id")
    direction = flask.request.args.get("sort_dir", "asc")
    if key not in SORTABLE_NODE_KEYS:
        raise errors.InvalidParameter(f"The sort_key value {key!r} is not supported; "
                                      f"use one of {', '.join(SORTABLE_NODE_KEYS)}.")
    if direction not in ("asc", "desc"):
        raise errors.InvalidParameter("sort_dir must be 'asc' or 'desc'.")
    return key, direction


def _list(detail: bool):
    fields = views.check_fields(flask.request.args.get("fields"), views.NODE_FIELDS,
                                views.NODE_FIELD_VERSIONS)
    if fields is not None and detail:
        raise errors.InvalidParameter("Can not specify ?detail=True and fields in the "
                                      "same request.")
    limit = common.page_limit()
    sort_key, sort_dir = _sort()
    columns = None if detail or fields else views.NODE_LIST_COLUMNS
    found = common.service().list_nodes(filters=_filters(), limit=limit,
                                        marker=flask.request.args.get("marker"),
                                        sort_key=sort_key, sort_dir=sort_dir,
                                        columns=columns)
    base = views.base_url()
    shown = fields or (None if detail else views.NODE_LIST_FIELDS)
    body = {"nodes": views.node_dicts(found, shown, base)}
    body.update(common.next_link(base, "nodes", limit, found, lambda n: n.uuid))
    return body


@bp.get("")
@bp.get("/")
def list_nodes():
    detail = common.bool_arg("detail")
    if detail is not None and not microversion.at_least(43):
        raise errors.NotAcceptable("The detail parameter requires API version 1.43.")
    return _list(bool(detail))


@bp.get("/detail")
def list_nodes_detail():
    return _list(True)


@bp.post("")
@bp.post("/")
def create_node():
    body = common.json_body()
    _check_versioned_input(body)
    node = common.service().create_node(body, legacy_available=not microversion.at_least(11))
    response = flask.jsonify(views.node_dict(node))
    response.status_code = 201
    response.headers["Location"] = f"{views.base_url()}/v1/nodes/{node.uuid}"
    return response


def _check_versioned_input(fields) -> None:
    too_new = [f for f in fields if not views.visible(f, views.NODE_FIELD_VERSIONS)]
    if too_new:
        raise errors.NotAcceptable(f"Field(s) {', '.join(sorted(too_new))} require a newer "
                                   "API version; send X-OpenStack-Ironic-API-Version.")


@bp.get("/<ident>")
def get_node(ident):
    fields = views.check_fields(flask.request.args.get("fields"), views.NODE_FIELDS,
                                views.NODE_FIELD_VERSIONS)
    return views.node_dict(common.service().get_node(ident), fields)


@bp.patch("/<ident>")
def update_node(ident):
    patch = common.json_body(list)
    _check_versioned_input({p.get("path", "/").split("/")[1] for p in patch
                            if isinstance(p, dict) and isinstance(p.get("path"), str)
                            and p.get("path").count("/") >= 1})
    return views.node_dict(common.service().update_node(ident, patch))


@bp.delete("/<ident>")
def delete_node(ident):
    common.service().delete_node(ident)
    return "", 204


@bp.get("/<ident>/validate")
def validate_node(ident):
    return common.service().validate_node(ident)


@bp.get("/<ident>/states")
def node_states(ident):
    return views.node_states(common.service().get_node(ident))


@bp.put("/<ident>/states/provision")
def set_provision_state(ident):
    body = common.json_body()
    if not isinstance(body, dict) or not isinstance(body.get("target"), str):
        raise errors.InvalidParameter('The body must be {"target": "<verb>"}, e.g. '
                                      '{"target": "manage"}.')
    unknown = set(body) - {"target", "configdrive", "clean_steps", "deploy_steps",
                           "service_steps", "disable_ramdisk", "rescue_password", "runbook"}
    if unknown:
        raise errors.InvalidParameter(f"Unknown attribute(s): {', '.join(sorted(unknown))}")
    _check_verb_version(body["target"])
    common.service().set_provision_state(
        ident, body["target"], clean_steps=body.get("clean_steps"),
        deploy_steps=body.get("deploy_steps"), configdrive=body.get("configdrive"))
    response = flask.make_response("", 202)
    response.headers["Location"] = f"{views.base_url()}/v1/nodes/{ident}/states"
    return response


def _check_verb_version(verb: str) -> None:
    minor = VERB_MIN_VERSION.get(verb)
    if minor and not microversion.at_least(minor):
        raise errors.NotAcceptable(f"The provision state target {verb!r} requires API "
                                   f"version 1.{minor}.")


@bp.put("/<ident>/states/power")
def set_power_state(ident):
    body = common.json_body()
    if not isinstance(body, dict) or not isinstance(body.get("target"), str):
        raise errors.InvalidParameter('The body must be {"target": "power on"} (or '
                                      '"power off", "rebooting", ...).')
    if body.get("timeout") is not None or "soft" in body["target"]:
        if not microversion.at_least(27):
            raise errors.NotAcceptable("Soft power actions and timeout require API 1.27.")
    common.service().set_power_state(ident, body["target"], body.get("timeout"))
    response = flask.make_response("", 202)
    response.headers["Location"] = f"{views.base_url()}/v1/nodes/{ident}/states"
    return response


@bp.put("/<ident>/maintenance")
def set_maintenance(ident):
    body = common.json_body(optional=True) or {}  # Ironic takes no body, or {"reason"}
    reason = body.get("reason")
    if set(body) - {"reason"} or (reason is not None and not isinstance(reason, str)):
        raise errors.InvalidParameter('The body must be empty or {"reason": "<text>"}.')
    common.service().set_maintenance(ident, True, reason)
    return "", 202


@bp.delete("/<ident>/maintenance")
def unset_maintenance(ident):
    common.service().set_maintenance(ident, False)
    return "", 202


@bp.get("/<ident>/ports")
def node_ports(ident):
    node = common.service().get_node(ident)
    found = common.service().list_ports(node=node.uuid)
    base = views.base_url()
    return {"ports": [views.port_dict(p, views.PORT_LIST_FIELDS, base) for p in found]}



# Node vendor passthru, Ironic's extension point for driver-specific calls
# (``baremetal node passthru call|list``, openstacksdk ``call_vendor_passthru``):
# ``/vendor_passthru?method=M`` (openstacksdk) and ``/vendor_passthru/M`` (ironicclient).
# metalcast's one method, issue_host_agent_token, is in conductor/service/ramdisk.py.
@bp.get("/<ident>/vendor_passthru/methods")
def vendor_passthru_methods(ident):
    return common.service().agent.passthru_methods(ident)


@bp.route("/<ident>/vendor_passthru", methods=["GET", "POST", "PUT", "DELETE"])
@bp.route("/<ident>/vendor_passthru/<method>", methods=["GET", "POST", "PUT", "DELETE"])
def vendor_passthru(ident, method=None):
    verb = flask.request.method
    args = common.json_body(optional=True) if verb in ("POST", "PUT") else None
    return common.service().agent.vendor_passthru(
        ident, method or flask.request.args.get("method"), verb, args)
