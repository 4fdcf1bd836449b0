"""``/fm/v1/alarms``: active alarms in StarlingX FM's shape (``{"alarms": [...]}``)."""
from __future__ import annotations

import flask

bp = flask.Blueprint("alarms", __name__, url_prefix="/fm/v1")


@bp.get("/alarms")
def list_alarms():
    service = flask.current_app.extensions["metalcast.service"]
    if getattr(service, "patching", None) is not None:
        service.patching.reevaluate_alarms()  # other conductors, the trust store on disk
    return {"alarms": [alarm.as_dict() for alarm in service.alarms.list()]}
