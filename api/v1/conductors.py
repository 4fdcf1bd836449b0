"""``/v1/conductors`` (API 1.49, ``baremetal conductor list|show``): thin views over
``service.conductors`` (conductor/service/conductors.py)."""
from __future__ import annotations

import flask

from api import common
from api.v1 import microversion, views
from conductor import errors

bp = flask.Blueprint("conductors", __name__, url_prefix="/v1/conductors")

#: Ironic's conductor fields (all 1.49), the short list's and the detail's.
FIELDS = ("hostname", "conductor_group", "alive", "drivers", "created_at", "updated_at",
          "links")
LIST_FIELDS = ("hostname", "conductor_group", "alive")
MIN_VERSION = 49


def _exposed() -> None:
    """Below 1.49 the resource does not exist (Ironic: 404)."""
    if not microversion.at_least(MIN_VERSION):
        raise errors.NotFound("The conductors resource requires API version 1.49 or "
                              "later; send X-OpenStack-Ironic-API-Version: 1.49.")


def _render(info, fields, base: str) -> dict:
    """The fields asked for, and always the links (as Ironic's sanitize_dict)."""
    out = {name: views._iso(getattr(info, name)) for name in fields if name != "links"}
    out["links"] = views.links("conductors", info.hostname, base)
    return out


def _fields() -> tuple | None:
    return views.check_fields(flask.request.args.get("fields"), FIELDS, {})


@bp.get("")
@bp.get("/")
def list_conductors():
    _exposed()
    fields = _fields()
    detail = common.bool_arg("detail")
    if fields is not None and detail:
        raise errors.InvalidParameter("Can not specify ?detail=True and fields in the "
                                      "same request.")
    limit = common.page_limit()
    found = common.service().conductors.page(
        limit=limit, marker=flask.request.args.get("marker"),
        sort_key=flask.request.args.get("sort_key", "id"),
        sort_dir=flask.request.args.get("sort_dir", "asc"))
    base = views.base_url()
    shown = fields or (FIELDS if detail else LIST_FIELDS)
    body: dict = {"conductors": [_render(info, shown, base) for info in found]}
    body.update(common.next_link(base, "conductors", limit, found, lambda c: c.hostname))
    return body


@bp.get("/<hostname>")
def get_conductor(hostname):
    _exposed()
    fields = _fields()
    return _render(common.service().conductors.get(hostname), fields or FIELDS,
                   views.base_url())
