"""The updates page: channels and their images and deltas, groups with their policy
(pause / resume; pausing confirmed first), instances by version and status (counts and
a paged, filtered table), the roll-out chart (chart.py) and the reboot leases held
(release, confirmed first; set the maximum). Everything through ``service.updates``;
the page re-reads its live region when an instance or a lease changes (the change
publisher's ``updates`` probe)."""
from __future__ import annotations

import datetime
import logging
import re
from collections import defaultdict

import flask

from api.console.chart import rollout_svg
from api.console.pages import bp, live_cursor, render, service
from conductor import errors
from conductor.updates.leases import MAX_HOLDERS
from conductor.updates.progress import naive

LOG = logging.getLogger(__name__)
PAGE_SIZE = 50
MAX_PAGE = 100000
#: A group, status, version, app ID or lease group as the update server allows them.
NAME = re.compile(r"[A-Za-z0-9{][A-Za-z0-9._+{}-]{0,63}")
FILTERS = (("group", "group"), ("status", "status"), ("version", "version"))
#: action -> (label, updates_enabled, confirmation text or "").
GROUP_ACTIONS = {
    "pause": ("Pause", False, "Pausing stops new updates to this group's instances until "
                              "it is resumed; updates under way finish."),
    "resume": ("Resume", True, ""),
}


def _updates():
    updates = service().updates
    if updates is None:
        raise errors.ServiceUnavailable("The update server is not part of this appliance.")
    return updates


def _name(value: str, what: str) -> str:
    if not NAME.fullmatch(value or ""):
        raise errors.InvalidParameter(f"Invalid {what} {value[:64]!r}: letters, digits, "
                                      "'.', '_', '+' and '-' only, at most 64.")
    return value


def _query(args) -> tuple[dict[str, str | None], int]:
    filters = {key: _name(args[key], what) if args.get(key) else None
               for key, what in FILTERS}
    page = args.get("page", "1")
    if not page.isdigit() or not 1 <= int(page) <= MAX_PAGE:
        raise errors.InvalidParameter(f"page must be a whole number 1-{MAX_PAGE}.")
    return filters, int(page)


def _counts(updates) -> dict:
    """Instances by version and by status (all groups), and the grand total."""
    by_version: dict[str, int] = defaultdict(int)
    by_status: dict[str, int] = defaultdict(int)
    for _group, version, status, n in updates.instance_counts():
        by_version[version] += n
        by_status[status] += n
    return {"version": dict(sorted(by_version.items())),
            "status": dict(sorted(by_status.items())), "total": sum(by_version.values())}


def _leases(updates) -> list[dict]:
    now = naive(datetime.datetime.now(datetime.UTC))
    return [dict(group, holders=[dict(h, expires_in=max(0, int(
        (naive(h["expires_at"]) - now).total_seconds()))) for h in group["holders"]])
        for group in updates.leases.status()]


def _page(message: str = "", kind: str = "ok", status: int = 200):
    updates = _updates()
    filters, page = _query(flask.request.args)
    cursor = live_cursor()
    rows = updates.instances(filters["group"], filters["status"], filters["version"],
                             PAGE_SIZE + 1, (page - 1) * PAGE_SIZE)
    args = {k: v for k, v in filters.items() if v}
    return render("updates.html", status, channels=updates.channels(),
                  images=updates.images(), deltas=updates.deltas(), groups=updates.groups(),
                  counts=_counts(updates), instances=rows[:PAGE_SIZE],
                  more=len(rows) > PAGE_SIZE, page=page, args=args, filters=filters,
                  chart=rollout_svg(updates.progress()), leases=_leases(updates),
                  group_actions=GROUP_ACTIONS, max_holders=MAX_HOLDERS, message=message,
                  message_kind=kind, live="updates", cursor=cursor)


#: ?done= after an action (its page is re-read from /ui/updates, not the POST's URL).
DONE = {"pause": "Group {what}: paused.", "resume": "Group {what}: resumed.",
        "release": "The reboot lease of {what} was released.",
        "max": "Lease group {what}: the maximum was set."}


def _done(action: str, what: str):
    return flask.redirect(flask.url_for("console.updates_page", done=action, what=what), 303)


def _who() -> str:
    return flask.g.get("user") or "(no authentication)"


@bp.get("/updates")
def updates_page():
    done, what = flask.request.args.get("done", ""), flask.request.args.get("what", "")
    if done in DONE and NAME.fullmatch(what):
        return _page(DONE[done].format(what=what))
    return _page()


@bp.post("/updates/groups/<appid>/<name>/<action>")
def group_action(appid: str, name: str, action: str):
    if action not in GROUP_ACTIONS:
        raise errors.InvalidParameter(f"Unknown action {action[:64]!r}: choose one of "
                                      f"{', '.join(GROUP_ACTIONS)}.")
    label, enabled, warning = GROUP_ACTIONS[action]
    group = _updates().group(_name(name, "group"), _name(appid, "app ID"))
    if warning and flask.request.form.get("confirm") != "yes":
        return render("confirm_form.html", title=f"{label} group {name}?", warning=warning,
                      cancel=flask.url_for("console.updates_page"),
                      action=flask.url_for("console.group_action", appid=appid, name=name,
                                           action=action), label=label)
    _updates().update_group(group["name"], {"updates_enabled": enabled}, group["appid"])
    LOG.info("Update group %s of %s: %s from the console by %s", name, appid, action, _who())
    return _done(action, name)


@bp.post("/updates/leases/<group>/holders/<holder>/release")
def release_lease(group: str, holder: str):
    _name(group, "lease group")
    if flask.request.form.get("confirm") != "yes":
        return render("confirm_form.html", cancel=flask.url_for("console.updates_page"),
                      title=f"Release {holder}'s lease in {group}?",
                      warning="Releasing lets another host reboot now, even if this one "
                              "is still rebooting.", label="Release",
                      action=flask.url_for("console.release_lease", group=group,
                                           holder=holder))
    _updates().leases.release(group, holder)
    LOG.info("Node %s: reboot lease in %s released from the console by %s", holder, group,
             _who())
    return _done("release", holder)


@bp.post("/updates/leases/<group>/max")
def set_lease_max(group: str):
    _name(group, "lease group")
    given = flask.request.form.get("max", "").strip()
    if not given.isdigit() or int(given) > MAX_HOLDERS:
        return _page(f"The maximum of lease group {group} must be a whole number "
                     f"0-{MAX_HOLDERS} (got {given[:32]!r}); nothing was changed.",
                     "error", 400)
    _updates().leases.set_max(group, int(given))
    LOG.info("Lease group %s: max %s set from the console by %s", group, given, _who())
    return _done("max", group)
