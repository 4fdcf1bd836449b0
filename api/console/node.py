"""The node page (properties, ports, driver and interfaces with secrets masked, the
current step, last_error, history) and its actions, destructive ones confirmed first."""
from __future__ import annotations

import dataclasses
import logging

import flask

from api.console.pages import bp, live_cursor, render, service
from conductor import errors
from conductor.secrets import mask
from conductor.service.model import INTERFACES

LOG = logging.getLogger(__name__)
MAX_REASON = 255
HISTORY_SHOWN = 50


@dataclasses.dataclass(frozen=True, slots=True)
class Action:
    label: str
    kind: str            #: provision | power | maintenance
    target: str          #: the verb, the power target, "on"/"off"
    warning: str = ""    #: set: the action asks for confirmation first


ACTIONS = {
    "manage": Action("Manage", "provision", "manage"),
    "provide": Action("Provide", "provision", "provide"),
    "deploy": Action("Deploy", "provision", "active"),
    "undeploy": Action("Undeploy", "provision", "deleted",
                       "Undeploying tears down the instance: its disk is cleaned."),
    "rebuild": Action("Rebuild", "provision", "rebuild",
                      "Rebuilding writes the image again: what is on the disk is lost."),
    "power-on": Action("Power on", "power", "power on"),
    "power-off": Action("Power off", "power", "power off",
                        "Powering off stops whatever the machine is running."),
    "reboot": Action("Reboot", "power", "rebooting",
                     "Rebooting interrupts whatever the machine is running."),
    "maintenance-on": Action("Maintenance on", "maintenance", "on"),
    "maintenance-off": Action("Maintenance off", "maintenance", "off"),
}
#: Deploying over an active node replaces its instance: confirmed too.
DEPLOY_OVER_ACTIVE = "The node is active: deploying again replaces what it runs."
DONE = {name: f"{action.label} requested." for name, action in ACTIONS.items()}


def _warning(name: str, node) -> str:
    if name == "deploy" and node.provision_state == "active":
        return DEPLOY_OVER_ACTIVE
    return ACTIONS[name].warning


def _view(node) -> dict:
    """What the page shows of the node: secrets masked."""
    step = node.deploy_step or node.clean_step or node.service_step or {}
    return {"node": node, "step": step,
            "driver_info": mask(node.driver_info or {}),
            "properties": node.properties or {},
            "instance_info": mask(node.instance_info or {}),
            "interfaces": [(i, getattr(node, f"{i}_interface")) for i in INTERFACES]}


@bp.get("/nodes/<ident>")
def node_page(ident: str, message: str = "", message_kind: str = "ok", status: int = 200):
    svc = service()
    cursor = live_cursor()
    node = svc.get_node(ident)
    ports = svc.list_ports(node=node.uuid)
    history = svc.node_history(node.uuid, limit=HISTORY_SHOWN, newest_first=True)
    done = flask.request.args.get("done", "")
    if not message and done in DONE:
        message = DONE[done]
    return render("node.html", status, ports=ports, history=history, actions=ACTIONS,
                  message=message, message_kind=message_kind, live="node", cursor=cursor,
                  **_view(node))


@bp.post("/nodes/<ident>/actions/<name>")
def node_action(ident: str, name: str):
    action = ACTIONS.get(name)
    if action is None:
        raise errors.InvalidParameter(f"Unknown action {name[:64]!r}: choose one of "
                                      f"{', '.join(ACTIONS)}.")
    svc = service()
    node = svc.get_node(ident)
    reason = flask.request.form.get("reason", "").strip()
    if len(reason) > MAX_REASON or "\x00" in reason:
        return node_page(node.uuid, f"The maintenance reason is at most {MAX_REASON} "
                         f"characters (this one has {len(reason)}); shorten it and try "
                         "again.", "error", 400)
    warning = _warning(name, node)
    if warning and flask.request.form.get("confirm") != "yes":
        return render("confirm.html", node=node, name=name, action=action,
                      warning=warning, reason=reason)
    LOG.info("Node %s: %s requested from the console by %s", node.uuid, name,
             flask.g.get("user") or "(no authentication)")
    try:
        _run(svc, node.uuid, action, reason)
    except errors.MetalcastError as exc:
        return node_page(node.uuid, f"{action.label} was refused: {exc}", "error",
                         exc.status_code if exc.status_code < 500 else 409)
    return flask.redirect(flask.url_for("console.node_page", ident=node.uuid, done=name), 303)


def _run(svc, uuid: str, action: Action, reason: str) -> None:
    if action.kind == "provision":
        svc.set_provision_state(uuid, action.target)
    elif action.kind == "power":
        svc.set_power_state(uuid, action.target)
    else:
        svc.set_maintenance(uuid, action.target == "on", reason or None)
