"""The patches page: what ``sw-patch query`` and ``query-hosts`` show, one patch's
details, the alarms, and upload / apply / remove / delete / host-install (remove and
delete confirmed first). The controller's info/warning/error text is shown as is."""
from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path

import flask

from api.console.pages import bp, live_cursor, render, service
from conductor import errors

LOG = logging.getLogger(__name__)
#: A patch ID or host name as StarlingX allows them (letters, digits, ._-).
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")
#: action -> (label, the controller's call, confirmation text or "").
OPERATIONS = {
    "apply": ("Apply", lambda ctl, pid: ctl.apply([pid]), ""),
    "remove": ("Remove", lambda ctl, pid: ctl.remove([pid]),
               "Removing a patch takes it off every host at their next install."),
    "delete": ("Delete", lambda ctl, pid: ctl.delete([pid]),
               "Deleting a patch removes it from the patch store for good."),
}


def _controller():
    controller = service().patching
    if controller is None:
        raise errors.ServiceUnavailable("Patching is disabled on this conductor "
                                        "([patching] enabled = false).")
    return controller


def _page(result: dict | None = None, status: int = 200, shown: str = ""):
    controller = _controller()
    cursor = live_cursor()
    controller.reevaluate_alarms()
    patches = controller.query()["pd"]
    details = controller.show([shown]) if shown in patches else None
    return render("patches.html", status, patches=patches, hosts=controller.query_hosts(),
                  alarms=[a.as_dict() for a in service().alarms.list()], result=result,
                  operations=OPERATIONS, shown=shown, details=details, live="patches",
                  cursor=cursor,
                  release=controller.running_release)


def _name(value: str, what: str) -> str:
    if not NAME.fullmatch(value or ""):
        raise errors.InvalidParameter(f"Invalid {what} {value[:64]!r}: letters, digits, "
                                      "'.', '_' and '-' only.")
    return value


@bp.get("/patches")
def patches_page():
    shown = flask.request.args.get("show", "")
    return _page(shown=_name(shown, "patch ID") if shown else "")


@bp.post("/patches/upload")
def upload_patch():
    upload = flask.request.files.get("file")
    if upload is None or not upload.filename:
        return _page({"error": "Choose a .patch file to upload first."}, 400)
    name = os.path.basename(upload.filename.replace("\\", "/"))
    if not name.endswith(".patch") or not NAME.fullmatch(name):
        return _page({"error": f"{name[:64]!r} is not a patch file name: a patch is "
                               "named <ID>.patch (letters, digits, '.', '_', '-')."}, 400)
    controller = _controller()
    with tempfile.TemporaryDirectory(dir=controller.scratch_dir()) as work:
        path = Path(work) / name
        upload.save(path)
        result = controller.upload([path]).as_dict()
    return _page(result, 400 if result["error"] else 200)


@bp.post("/patches/<patch_id>/<operation>")
def patch_operation(patch_id: str, operation: str):
    if operation not in OPERATIONS:
        raise errors.InvalidParameter(f"Unknown operation {operation[:64]!r}: choose one "
                                      f"of {', '.join(OPERATIONS)}.")
    label, call, warning = OPERATIONS[operation]
    _name(patch_id, "patch ID")
    if warning and flask.request.form.get("confirm") != "yes":
        return render("confirm_form.html", title=f"{label} {patch_id}?", warning=warning,
                      label=label, cancel=flask.url_for("console.patches_page"),
                      action=flask.url_for("console.patch_operation", patch_id=patch_id,
                                           operation=operation))
    LOG.info("Patch %s: %s requested from the console by %s", patch_id, operation,
             flask.g.get("user") or "(no authentication)")
    result = call(_controller(), patch_id).as_dict()
    return _page(result, 400 if result["error"] else 200)


@bp.post("/hosts/<hostname>/install")
def host_install(hostname: str):
    LOG.info("Host %s: install requested from the console by %s",
             _name(hostname, "host name"), flask.g.get("user") or "(no authentication)")
    result = _controller().host_install_async(hostname).as_dict()
    return _page(result, 400 if result["error"] else 200)
