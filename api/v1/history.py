"""``/v1/nodes/{node}/history``: a node's event history (Ironic API 1.78).

As Ironic: the list shows uuid, created_at, severity and event (``?detail=true`` adds
conductor, event_type and user), oldest first, paged with ``limit`` and ``marker``;
one event by its UUID shows every field. Below 1.78 the routes do not exist (404).
"""
from __future__ import annotations

import flask

from api import common
from api.v1 import microversion, views
from conductor import errors
from conductor.service.model import NodeHistory

bp = flask.Blueprint("node_history", __name__, url_prefix="/v1/nodes")

MIN_MINOR = 78
STANDARD_FIELDS = ("uuid", "created_at", "severity", "event")
DETAIL_FIELDS = ("uuid", "created_at", "severity", "event", "event_type", "conductor",
                 "user")


def _check_version() -> None:
    if not microversion.at_least(MIN_MINOR):
        raise errors.NotFound(f"Node history requires API version 1.{MIN_MINOR}; "
                              "send X-OpenStack-Ironic-API-Version: 1.78 or later.")


def _event_dict(node: str, record: NodeHistory, fields: tuple[str, ...]) -> dict:
    out = {name: views._iso(getattr(record, name)) for name in fields}
    out["links"] = views.links("nodes", node, views.base_url(), f"/history/{record.uuid}")
    return out


@bp.get("/<ident>/history")
def list_history(ident):
    _check_version()
    detail = common.bool_arg("detail") or False
    limit = common.page_limit()
    marker = flask.request.args.get("marker")
    service = common.service()
    node = service.get_node(ident)
    found = service.node_history(node.uuid, limit=limit, marker=marker)
    fields = DETAIL_FIELDS if detail else STANDARD_FIELDS
    body: dict = {"history": [_event_dict(node.uuid, r, fields) for r in found]}
    body.update(common.next_link(views.base_url(), f"nodes/{node.uuid}/history", limit,
                                 found, lambda r: r.uuid))
    return body


@bp.get("/<ident>/history/<event>")
def get_history_event(ident, event):
    _check_version()
    service = common.service()
    node = service.get_node(ident)
    return _event_dict(node.uuid, service.node_history_event(node.uuid, event), DETAIL_FIELDS)
