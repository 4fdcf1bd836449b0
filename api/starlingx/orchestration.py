"""StarlingX's VIM orchestration API (specs/starlingx-patching.md §6.1,
specs/starlingx-sw-manager-rest.md) under ``/api/orchestration/sw-patch/strategy``.

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
bp = flask.Blueprint("orchestration", __name__, url_prefix=PREFIX + "/sw-patch/strategy")


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
    return {"strategy": _orchestrator().get()}


@bp.get("/<strategy_uuid>")
def show_one(strategy_uuid: str):
    if not _is_uuid(strategy_uuid):
        raise errors.InvalidParameter(f"Invalid strategy uuid, uuid={strategy_uuid}")
    strategy = _orchestrator().get(strategy_uuid)
    if strategy is None:
        raise errors.NotFound(f"No strategy {strategy_uuid} exists.")
    return {"strategy": strategy}


@bp.post("")
def create():
    return {"strategy": _orchestrator().create(common.json_body())}


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
    return {"strategy": _orchestrator().delete(force)}


@bp.post("/actions")
def action():
    return {"strategy": _orchestrator().action(common.json_body())}, 202
