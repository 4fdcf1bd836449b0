"""``/v1/drivers``: the hardware types live conductors serve (``baremetal driver list``)."""
from __future__ import annotations

import flask

from api import common
from api.v1 import views

bp = flask.Blueprint("drivers", __name__, url_prefix="/v1/drivers")


def _driver(name: str, hosts: list[str], table: dict | None, base: str) -> dict:
    body = {"name": name, "hosts": hosts, "type": "dynamic",
            "links": views.links("drivers", name, base),
            "properties": views.links("drivers", name, base, "/properties")}
    for kind, names in (table or {}).items():
        body[f"default_{kind}_interface"] = names[0]
        body[f"enabled_{kind}_interfaces"] = list(names)
    return body


@bp.get("")
@bp.get("/")
def list_drivers():
    base = views.base_url()
    detail = bool(common.bool_arg("detail"))
    found = common.service().list_drivers()
    drivers = []
    for name, hosts in sorted(found.items()):
        table = common.service().get_driver(name)[1] if detail else None
        drivers.append(_driver(name, hosts, table, base))
    return {"drivers": drivers}


@bp.get("/<name>")
def get_driver(name):
    hosts, table = common.service().get_driver(name)
    return _driver(name, hosts, table, views.base_url())
