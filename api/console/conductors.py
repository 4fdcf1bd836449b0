"""The conductors page: every conductor (group, alive, hardware types, last heartbeat)
and how many nodes the hash ring maps to each (conductor/service/conductors.py
``node_counts``: one read of the nodes, one ring lookup each)."""
from __future__ import annotations

from api.console.pages import bp, render, service


@bp.get("/conductors")
def conductors_page():
    conductors = service().conductors
    counts = conductors.node_counts()
    return render("conductors.html", conductors=conductors.page(sort_key="hostname"),
                  counts=counts, unmapped=counts.get(None, 0))
