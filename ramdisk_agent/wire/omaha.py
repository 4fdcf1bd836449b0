"""The Omaha v3 wire format as Flatcar's update_engine and Nebraska speak it.

Shared by the appliance's update server (parse a request, render a response) and the
host agent's update client (render a request, parse a response), so the two never
disagree. Facts from flatcar/update_engine ``omaha_request_action.cc`` and
flatcar/go-omaha ``protocol.go`` (specs/ab-image-updates.md §2.1-2.2):

- a request is ``<request protocol="3.0">`` with ``<os>`` and one or more ``<app>``,
  each with ``<ping>``, ``<updatecheck>`` and/or ``<event>`` children;
- update_engine reads from a response only ``updatecheck/@status`` (``noupdate`` or
  ``ok``), ``@PollInterval``, ``urls/url/@codebase`` (the payload URL is codebase +
  "/" + package name), ``manifest/@version``, the first ``packages/package``'s
  ``name`` and ``size`` (> 0), and the ``actions/action[@event="postinstall"]``'s
  ``sha256`` (base64 of the payload's SHA-256; required), ``IsDeltaPayload``,
  ``DisablePayloadBackoff``, ``MaxFailureCountPerUrl``. The package's ``hash`` is
  base64 SHA-1 (Omaha's); ``hash_sha256`` (hex) is what Nebraska adds to packages for
  flatcar-postinst's extra payloads. We render all of them;
- Nebraska answers a refused check with an app status ``error-…`` (:data:`APP_STATUSES`)
  and ``<updatecheck status="error-internal">``, and each event with ``<event status="ok">``.

Parsing goes through :mod:`ramdisk_agent.wire.omaha_xml` (size, depth and count caps,
defusedxml). Codes: :mod:`ramdisk_agent.wire.omaha_codes`; the response side lives in
:mod:`ramdisk_agent.wire.omaha_response` and is re-exported here.
"""
from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET

from ramdisk_agent.wire import omaha_codes, omaha_xml
from ramdisk_agent.wire.errors import OmahaInvalid, OmahaLimitExceeded
from ramdisk_agent.wire.omaha_response import (
    APP_STATUSES,
    AppResponse,
    Manifest,
    Package,
    Response,
    UpdateCheck,
    parse_response,
    render_response,
)
from ramdisk_agent.wire.omaha_xml import quote

PROTOCOL = omaha_xml.PROTOCOL
#: Flatcar's Omaha application id (update.conf's default).
FLATCAR_APPID = "{e96281a6-d1af-4bde-9a0a-97b76e56dc57}"
MAX_APPS = 8               #: update_engine sends one
MAX_EVENTS = 8             #: per app; update_engine sends one or two



# -- requests ---------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Event:
    """One ``<event>``: what the client reports (13/14/3 and their results)."""

    type: int
    result: int
    error_code: int | None = None
    previous_version: str | None = None

    @property
    def error(self) -> omaha_codes.ErrorCode | None:
        return None if self.error_code is None else omaha_codes.decode(self.error_code)

    @property
    def is_rollback(self) -> bool:
        """Event 3, result 0, error 44: the new version did not stay (spec §1.2)."""
        return (self.type == omaha_codes.UPDATE_COMPLETE
                and self.result == omaha_codes.RESULT_ERROR
                and self.error is not None and self.error.is_rollback)


@dataclasses.dataclass(frozen=True)
class AppRequest:
    """One ``<app>`` of a request, with update_engine's attributes."""

    appid: str
    version: str
    track: str = ""
    bootid: str = ""
    machineid: str = ""
    machinealias: str = ""
    oem: str = ""
    oemversion: str = ""
    alephversion: str = ""
    board: str = ""
    lang: str = ""
    hardware_class: str = ""
    delta_okay: bool = False
    ping: bool = False
    updatecheck: bool = False
    events: tuple[Event, ...] = ()
    #: metalcast's ``metalcast_passive_version``: the version the host's passive slot
    #: is known to hold, so the server may offer a delta from it, applied in place
    #: (update_engine sends no such attribute; the server then offers what it did)
    passive_version: str = ""


@dataclasses.dataclass(frozen=True)
class OsInfo:
    """The ``<os>`` element (Flatcar: version "Chateau", platform "CoreOS")."""

    version: str = ""
    platform: str = ""
    sp: str = ""
    arch: str = ""


@dataclasses.dataclass(frozen=True)
class Request:
    """A whole update request."""

    apps: tuple[AppRequest, ...]
    os: OsInfo = OsInfo()
    version: str = ""
    updaterversion: str = ""
    installsource: str = "scheduler"   #: "ondemandupdate" for an interactive check
    ismachine: bool = True


#: metalcast's <app> attribute naming the passive slot's version (AppRequest).
PASSIVE_VERSION = "metalcast_passive_version"
#: <app> attributes in the order update_engine writes them (GetAppXml).
_APP_ATTRIBUTES = ("appid", "version", "track", "bootid", "oem", "oemversion",
                   "alephversion", "machineid", "machinealias", "lang", "board",
                   "hardware_class")


def parse_request(body: bytes) -> Request:
    """A request body, checked; an :class:`OmahaError` subclass naming what is wrong."""
    root = omaha_xml.read(body, "request", omaha_xml.REQUEST_BOUNDS)
    omaha_xml.require_protocol(root)
    apps = root.findall("app")
    if not apps:
        raise OmahaInvalid("the request has no <app>")
    if len(apps) > MAX_APPS:
        raise OmahaLimitExceeded(f"{len(apps)} apps in one request (at most {MAX_APPS})")
    os_element = root.find("os")
    os_info = OsInfo() if os_element is None else OsInfo(
        *(os_element.get(name, "") for name in ("version", "platform", "sp", "arch")))
    return Request(tuple(_app_request(app) for app in apps), os_info,
                   root.get("version", ""), root.get("updaterversion", ""),
                   root.get("installsource", ""), root.get("ismachine", "") == "1")


def _app_request(app: ET.Element) -> AppRequest:
    events = app.findall("event")
    if len(events) > MAX_EVENTS:
        raise OmahaLimitExceeded(f"{len(events)} events in one app (at most {MAX_EVENTS})")
    values = {name: app.get(name, "") for name in _APP_ATTRIBUTES}
    values["appid"] = omaha_xml.required(app, "appid")
    values["version"] = omaha_xml.required(app, "version")
    return AppRequest(**values, delta_okay=app.get("delta_okay") == "true",
                      ping=app.find("ping") is not None,
                      updatecheck=app.find("updatecheck") is not None,
                      events=tuple(_event(event) for event in events),
                      passive_version=app.get(PASSIVE_VERSION, ""))


def _event(event: ET.Element) -> Event:
    code = event.get("errorcode")
    return Event(omaha_xml.integer(event, "eventtype", 0, 0xFFFF),
                 omaha_xml.integer(event, "eventresult", 0, 0xFFFF),
                 None if code is None else omaha_xml.integer(event, "errorcode", -(1 << 31),
                                                    (1 << 32) - 1),
                 event.get("previousversion"))


def render_request(request: Request) -> bytes:
    """The request as update_engine writes it (GetRequestXml): same elements, attribute
    order and layout; values escaped."""
    lines = ['<?xml version="1.0" encoding="UTF-8"?>',
             f"<request protocol=\"{PROTOCOL}\" version={quote(request.version)} "
             f"updaterversion={quote(request.updaterversion)} "
             f"installsource={quote(request.installsource)} "
             f"ismachine=\"{int(request.ismachine)}\">",
             f"    <os version={quote(request.os.version)} platform={quote(request.os.platform)} "
             f"sp={quote(request.os.sp)}></os>"]
    for app in request.apps:
        attributes = " ".join(f"{name}={quote(getattr(app, name))}" for name in _APP_ATTRIBUTES)
        passive = f" {PASSIVE_VERSION}={quote(app.passive_version)}" \
            if app.passive_version else ""
        lines.append(f"    <app {attributes} "
                     f"delta_okay=\"{'true' if app.delta_okay else 'false'}\"{passive} >")
        if app.ping:
            lines.append('        <ping active="1"></ping>')
        if app.updatecheck:
            lines.append("        <updatecheck></updatecheck>")
        lines.extend(f"        <event{_event_attributes(event)}></event>"
                     for event in app.events)
        lines.append("    </app>")
    lines.append("</request>")
    return ("\n".join(lines) + "\n").encode("utf-8")


def _event_attributes(event: Event) -> str:
    text = f' eventtype="{event.type}" eventresult="{event.result}"'
    if event.error_code is not None:
        text += f' errorcode="{event.error_code}"'
    if event.previous_version is not None:
        text += f" previousversion={quote(event.previous_version)}"
    return text


__all__ = ["APP_STATUSES", "FLATCAR_APPID", "AppRequest", "AppResponse", "Event", "Manifest",
           "OsInfo", "Package", "Request", "Response", "UpdateCheck", "parse_request",
           "parse_response", "render_request", "render_response"]
