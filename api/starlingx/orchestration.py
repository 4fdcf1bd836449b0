"""StarlingX's VIM orchestration API (specs/starlingx-patching.md §6.1,
specs/starlingx-sw-manager-rest.md) under ``/api/orchestration/sw-patch/strategy``,
and the same for metalcast's rolling re-image under ``/api/orchestration/
image-update/strategy`` (create body: image, image-checksum, delta-url,
delta-version, worker-apply-type serial|parallel, max-parallel-worker-hosts,
alarm-restrictions). One strategy of any type exists at a time.

Thin views over the conductor's Orchestrator (``service.orchestration``). Bodies are
StarlingX's: ``{"strategy": {...}}`` (null when there is none) on every 2xx, DELETE
included (StarlingX's client json-decodes every 2xx body; an empty one crashes it),
202 for actions; errors carry ``faultstring`` at the top level, as wsme writes them
(api/errors.py), which the client prints. Authenticated like every other path.
"""
from __future__ import annotations

import uuid

import flask

from api import common
from conductor import errors

PREFIX = "/api/orchestration"
#: The strategy types: StarlingX's sw-patch, and metalcast's rolling re-image.
TYPES = ("sw-patch", "image-update")
bp = flask.Blueprint("orchestration", __name__)
#: Blueprint name (one registration per type) -> strategy type.
_NAMES = {f"orchestration_{kind.replace('-', '_')}": kind for kind in TYPES}


def register(app: flask.Flask) -> None:
    """Serve the API on ``app``: the same routes under each type's path."""
    for name, kind in _NAMES.items():
        app.register_blueprint(bp, url_prefix=f"{PREFIX}/{kind}/strategy", name=name)


@bp.before_request
def _kind() -> None:
    flask.g.strategy_type = _NAMES[str(flask.request.blueprint)]


def _is_uuid(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value.lower()
    except ValueError:
        return False


def is_orchestration_path(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


def _orchestrator():
    orchestrator = getattr(common.service(), "orchestration", None)
    if orchestrator is None:
        raise errors.ServiceUnavailable("Orchestration is disabled on this conductor "
                                        "([orchestration] enabled = false).")
    return orchestrator


@bp.get("")
def show():
    return {"strategy": _orchestrator().get(name=flask.g.strategy_type)}


@bp.get("/<strategy_uuid>")
def show_one(strategy_uuid: str):
    if not _is_uuid(strategy_uuid):
        raise errors.InvalidParameter(f"Invalid strategy uuid, uuid={strategy_uuid}")
    strategy = _orchestrator().get(strategy_uuid, name=flask.g.strategy_type)
    if strategy is None:
        raise errors.NotFound(f"No strategy {strategy_uuid} exists.")
    return {"strategy": strategy}


@bp.post("")
def create():
    return {"strategy": _orchestrator().create(common.json_body(), flask.g.strategy_type)}


@bp.delete("")
def delete():
    body = common.json_body(optional=True) or {}
    unknown = sorted(set(body) - {"force"})
    if unknown:
        raise errors.InvalidParameter(f"Unknown field(s): {', '.join(unknown)}; delete "
                                      "takes 'force' only.")
    force = body.get("force", False)
    if not isinstance(force, bool):
        raise errors.InvalidParameter("force must be true or false.")
    return {"strategy": _orchestrator().delete(force, flask.g.strategy_type)}


@bp.post("/actions")
def action():
    return {"strategy": _orchestrator().action(common.json_body(),
                                               flask.g.strategy_type)}, 202
