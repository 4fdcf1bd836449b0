"""``/v1/ports``: thin views over the conductor service facade."""
from __future__ import annotations

import flask

from api import common
from api.v1 import microversion, views
from conductor import errors

bp = flask.Blueprint("ports", __name__, url_prefix="/v1/ports")


def _list(detail: bool):
    args = flask.request.args
    fields = views.check_fields(args.get("fields"), views.PORT_FIELDS,
                                views.PORT_FIELD_VERSIONS)
    if fields is not None and detail:
        raise errors.InvalidParameter("Can not specify ?detail=True and fields in the "
                                      "same request.")
    node = args.get("node") or args.get("node_uuid")
    limit = common.page_limit()
    found = common.service().list_ports(node=node, address=args.get("address"),
                                        limit=limit, marker=args.get("marker"))
    base = views.base_url()
    shown = fields or (None if detail else views.PORT_LIST_FIELDS)
    body = {"ports": [views.port_dict(p, shown, base) for p in found]}
    body.update(common.next_link(base, "ports", limit, found, lambda p: p.uuid))
    return body


@bp.get("")
@bp.get("/")
def list_ports():
    detail = common.bool_arg("detail")
    if detail is not None and not microversion.at_least(43):
        raise errors.NotAcceptable("The detail parameter requires API version 1.43.")
    return _list(bool(detail))


@bp.get("/detail")
def list_ports_detail():
    return _list(True)


@bp.post("")
@bp.post("/")
def create_port():
    body = common.json_body()
    too_new = [f for f in body if not views.visible(f, views.PORT_FIELD_VERSIONS)]
    if too_new:
        raise errors.NotAcceptable(f"Field(s) {', '.join(sorted(too_new))} require a "
                                   "newer API version.")
    port = common.service().create_port(body)
    response = flask.jsonify(views.port_dict(port))
    response.status_code = 201
    response.headers["Location"] = f"{views.base_url()}/v1/ports/{port.uuid}"
    return response


@bp.get("/<port_uuid>")
def get_port(port_uuid):
    fields = views.check_fields(flask.request.args.get("fields"), views.PORT_FIELDS,
                                views.PORT_FIELD_VERSIONS)
    return views.port_dict(common.service().get_port(port_uuid), fields)


@bp.patch("/<port_uuid>")
def update_port(port_uuid):
    return views.port_dict(common.service().update_port(port_uuid, common.json_body(list)))


@bp.delete("/<port_uuid>")
def delete_port(port_uuid):
    common.service().delete_port(port_uuid)
    return "", 204
