"""The REST API: a Flask application factory and one blueprint per resource.

HTTP only: views parse requests and call the conductor service facade; they do
no SQL and no hardware I/O.
"""
from __future__ import annotations

import flask

from api import auth, common, errors
from api.json_provider import OrjsonProvider
from api.starlingx import alarms, patching
from api.v1 import drivers, microversion, nodes, ports, root
from api.v1 import ramdisk as agent

ROOT_PATHS = frozenset({"/", "/v1", "/v1/"})


def _negotiate() -> None:
    if flask.request.path.startswith(("/patching", "/fm/")):
        return  # StarlingX's APIs have no Ironic microversions
    if flask.request.path in ROOT_PATHS:
        try:  # discovery must answer even for a version we refuse elsewhere
            microversion.negotiate()
        except Exception:  # noqa: BLE001
            flask.g.version = None
        return
    microversion.negotiate()


def create_app(service, settings=None) -> flask.Flask:
    """Build the WSGI app around a conductor ``service`` (see conductor.service.facade)."""
    settings = settings or service.settings
    app = flask.Flask("metalcast", static_folder=None)  # no /static: it served $CWD/static
    app.config.update(MAX_LIMIT=settings.api.max_limit,
                      PUBLIC_ENDPOINT=settings.api.public_endpoint or None,
                      MAX_CONTENT_LENGTH=128 * 1024 * 1024)
    app.json = OrjsonProvider(app)
    app.json.sort_keys = False
    app.json.compact = True
    app.extensions["metalcast.service"] = service
    app.url_map.strict_slashes = False
    auth.init_app(app, settings.api.auth_strategy, settings.htpasswd_path)
    app.before_request(common.refuse_nul)  # before any lookup: PostgreSQL 500s on NUL
    app.before_request(_negotiate)
    app.after_request(microversion.add_headers)
    errors.init_app(app)
    for blueprint in (root.bp, nodes.bp, ports.bp, drivers.bp, agent.bp, patching.bp,
                      alarms.bp):
        app.register_blueprint(blueprint)
    return app
