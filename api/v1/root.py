"""Version discovery: ``GET /`` and ``GET /v1``."""
from __future__ import annotations

import flask

from api.v1 import microversion, views

bp = flask.Blueprint("root", __name__)


@bp.get("/")
def root():
    base = views.base_url()
    version = microversion.version_document(base)
    return {"name": "OpenStack Ironic API (metalcast)",
            "description": "metalcast bare-metal provisioning: Ironic v1 API subset.",
            "default_version": version, "versions": [version]}


@bp.get("/v1")
@bp.get("/v1/")
def v1():
    base = views.base_url()
    doc = {"id": "v1", "links": [{"href": f"{base}/v1/", "rel": "self"}],
           "media_types": [{"base": "application/json",
                            "type": "application/vnd.openstack.ironic.v1+json"}],
           "version": microversion.version_document(base)}
    for kind in ("nodes", "ports", "chassis", "drivers"):
        doc[kind] = [{"href": f"{base}/v1/{kind}/", "rel": "self"},
                     {"href": f"{base}/{kind}/", "rel": "bookmark"}]
    return doc
