"""The fleet page: counts by state and one server-side page of the node table
(search, filters, sorting, paging: conductor/service/fleet.py)."""
from __future__ import annotations

import flask

from api.console.pages import bp, live_cursor, render, service
from conductor.service.fleet import PAGE_SIZES, FleetQuery

#: Table columns: (sort key or None, heading).
COLUMNS = (("name", "Name"), ("provision_state", "Provision state"),
           ("power_state", "Power"), ("driver", "Driver"),
           ("conductor_group", "Group"), (None, "Maintenance / fault"),
           ("updated_at", "Updated"))


@bp.get("/fleet")
def fleet_page():
    query = FleetQuery.parse(flask.request.args)
    cursor = live_cursor()
    fleet = service().fleet
    page = fleet.page(query)
    args = {k: v for k, v in flask.request.args.items() if k != "page"}
    return render("fleet.html", page=page, counts=fleet.counts(), choices=fleet.choices(),
                  columns=COLUMNS, args=args, sizes=PAGE_SIZES, live="fleet", cursor=cursor)
