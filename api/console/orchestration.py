"""The orchestration page: the current sw-manager strategy (sw-patch or image-update)
with its phases, stages and steps; it re-reads itself when the strategy changes."""
from __future__ import annotations

from api.console.pages import bp, live_cursor, render, service

PHASES = ("build-phase", "apply-phase", "abort-phase")


@bp.get("/orchestration")
def orchestration_page():
    cursor = live_cursor()
    orchestrator = service().orchestration
    strategy = orchestrator.get() if orchestrator is not None else None
    return render("orchestration.html", strategy=strategy, phases=PHASES,
                  enabled=orchestrator is not None, live="strategy", cursor=cursor)
