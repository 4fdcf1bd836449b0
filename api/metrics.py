"""``GET /metrics``: the appliance's Prometheus metrics in the text format.

A thin view over the registry the appliance built (conductor/metrics/); behind the
API's authentication like every route (Prometheus sends basic auth). Nothing in it
comes from a node's driver_info or a token: only states, drivers, faults and counts.
"""
from __future__ import annotations

import flask

from api import common
from conductor import errors

bp = flask.Blueprint("metrics", __name__)


@bp.get("/metrics")
def metrics():
    exporter = common.service().metrics
    if exporter is None:
        raise errors.NotFound("This appliance exports no metrics.")
    return flask.Response(exporter.render(), mimetype=None,
                          headers={"Content-Type": exporter.content_type})
