"""The REST API: a Flask application factory and one blueprint per resource.

HTTP only: views parse requests and call the conductor service facade; they do
no SQL and no hardware I/O.
"""
from __future__ import annotations

import flask

from api import auth, common, console, errors, identity, limits, metrics, request_id, updates
from api.json_provider import OrjsonProvider
from api.starlingx import alarms, orchestration, patching
from api.throttle import CheckBudget
from api.updates import fast
from api.v1 import conductors, drivers, history, microversion, nodes, ports, root
from api.v1 import ramdisk as agent

ROOT_PATHS = frozenset({"/", "/v1", "/v1/"})


def _negotiate() -> None:
    if flask.request.path.startswith(("/fm/", "/v3", "/ui/")) or \
            patching.is_patch_path(flask.request.path) or \
            orchestration.is_orchestration_path(flask.request.path) or \
            updates.is_updates_path(flask.request.path):
        return  # StarlingX's APIs, Identity v3 and the console have no microversions
    if flask.request.path in ROOT_PATHS:
        try:  # discovery must answer even for a version we refuse elsewhere
            microversion.negotiate()
        except Exception:  # noqa: BLE001
            flask.g.version = None
        return
    microversion.negotiate()


def _base_app(service, settings, checks: CheckBudget | None) -> flask.Flask:
    """What both apps share: JSON, limits, the service, authentication, NUL refusal.
    Body caps are WSGI middleware in front of the app (api/limits.py), not Flask's
    MAX_CONTENT_LENGTH: they are per route and apply before authentication."""
    app = flask.Flask("metalcast", static_folder=None)  # no /static: it served $CWD/static
    app.config.update(MAX_LIMIT=settings.api.max_limit,
                      PUBLIC_ENDPOINT=settings.api.public_endpoint or None)
    limits.install(app, settings.api.max_request_body_size)
    app.json = OrjsonProvider(app)
    app.json.sort_keys = False
    app.json.compact = True
    app.extensions["metalcast.service"] = service
    app.url_map.strict_slashes = False
    auth.init_app(app, settings.api.auth_strategy, settings.htpasswd_path,
                  checks or CheckBudget.from_settings(settings.api))
    app.before_request(common.refuse_nul)  # before any lookup: PostgreSQL 500s on NUL
    errors.init_app(app)
    request_id.install(app)  # last: outermost, so every answer carries the header
    return app


def create_app(service, settings=None, checks: CheckBudget | None = None) -> flask.Flask:
    """Build the WSGI app around a conductor ``service`` (see conductor.service.facade).
    ``checks`` bounds password checks (api/throttle.py); apps that share one share
    its bounds (``metalcast serve`` gives both listeners the same)."""
    settings = settings or service.settings
    app = _base_app(service, settings, checks)
    app.before_request(_negotiate)
    app.after_request(microversion.add_headers)
    for blueprint in (root.bp, nodes.bp, history.bp, ports.bp, drivers.bp, conductors.bp,
                      agent.bp, alarms.bp, identity.bp):
        app.register_blueprint(blueprint)
    app.register_blueprint(metrics.bp)  # Prometheus' /metrics (conductor/metrics/)
    patching.register(app)
    orchestration.register(app)
    console.register(app)  # the operator console at /ui/ (api/console/)
    updates.register(app)  # Omaha /v1/update/ and /updates/v1/ (api/updates/)
    if getattr(service, "updates", None) is not None:  # the update check beside Flask
        omaha = fast.OmahaApp(service.updates, app.config["PUBLIC_ENDPOINT"])
        app.wsgi_app = fast.Dispatch(  # type: ignore[method-assign]
            app.wsgi_app, request_id.RequestIdMiddleware(limits.BodyLimitMiddleware(
                omaha, app.extensions[limits.EXTENSION])))
    return app


def create_patching_app(service, settings=None,
                        checks: CheckBudget | None = None) -> flask.Flask:
    """The patching listener's app: StarlingX's patch API alone (api/starlingx/
    patching.py), behind the same authentication as the main API."""
    settings = settings or service.settings
    app = _base_app(service, settings, checks)
    patching.register(app, listener=True)
    return app


def create_orchestration_app(service, settings=None,
                             checks: CheckBudget | None = None) -> flask.Flask:
    """The VIM listener's app ([api] vim_port, StarlingX's 4545): the orchestration
    API alone (api/starlingx/orchestration.py), behind the same authentication."""
    settings = settings or service.settings
    app = _base_app(service, settings, checks)
    orchestration.register(app)
    return app
