"""The response side of the Omaha v3 wire format (see :mod:`ramdisk_agent.wire.omaha`).

The server renders a :class:`Response`; the agent's update client parses one with the
rules update_engine applies (``OmahaRequestAction::ParseResponse``): a missing status,
URL codebase, package name, positive size or postinstall ``sha256`` makes the answer
invalid (error 34, OmahaResponseInvalid, on the client's side).
"""
from __future__ import annotations

import base64
import dataclasses
import xml.etree.ElementTree as ET

from ramdisk_agent.wire import omaha_xml
from ramdisk_agent.wire.errors import OmahaInvalid, OmahaLimitExceeded
from ramdisk_agent.wire.omaha_xml import quote

PROTOCOL = omaha_xml.PROTOCOL
MAX_APPS = 8
MAX_URLS = MAX_PACKAGES = 16
DEFAULT_MAX_FAILURES_PER_URL = 10   # update_engine's kDefaultMaxFailureCountPerUrl

#: App statuses of a response: "ok" and Nebraska's refusals (backend/pkg/omaha).
APP_STATUSES: dict[str, str] = {
    "ok": "the app is known; see its updatecheck",
    "error-unknownApplication": "no such application id",
    "error-unknownApplicationOrGroup": "no such application, or no group for the track",
    "error-noPackageFound": "the channel has no package",
    "error-instanceRegistrationFailed": "the instance could not be recorded",
    "error-updatesDisabled": "updates are paused for the group",
    "error-maxUpdatesPerPeriodLimitReached": "the group's updates per period are used up",
    "error-maxConcurrentUpdatesLimitReached": "too many instances are updating now",
    "error-maxTimedOutUpdatesLimitReached": "too many updates timed out: the group halted",
    "error-couldNotCheckUpdatesStats": "the rollout state could not be read",
    "error-updateInProgressOnInstance": "this instance is already updating",
    "error-failedToRetrieveUpdatePackageInfo": "the package could not be read",
}
UPDATE_STATUSES = ("ok", "noupdate", "error-internal")


@dataclasses.dataclass(frozen=True)
class Package:
    """One ``<package>``: the first of a manifest is the update payload."""

    name: str
    size: int
    sha1: bytes | None = None      #: raw digest; rendered base64 in ``hash``
    sha256: bytes | None = None    #: raw digest; rendered hex in ``hash_sha256``
    required: bool = True


#: A delta's source as the response names it ("": the active slot).
DELTA_BASES = ("", "active", "passive")


@dataclasses.dataclass(frozen=True)
class Manifest:
    """What to install: the version, the packages, the postinstall action's values."""

    version: str
    packages: tuple[Package, ...]
    sha256: bytes                  #: the payload's SHA-256, rendered base64 (required)
    is_delta: bool = False
    disable_payload_backoff: bool = True   # Nebraska's default
    max_failure_count_per_url: int | None = None
    #: metalcast's Ed25519 signature of a full image (wire/image_signature.py), sent
    #: as the action's ``MetalcastSignature`` (base64); update_engine ignores it.
    signature: bytes | None = None
    #: a delta's source: "" (the active slot, update_engine's only kind) or "passive"
    #: (a delta from the version the request named as its passive slot's, applied in
    #: place), sent as the action's ``MetalcastDeltaBase``; update_engine ignores it.
    delta_base: str = ""


@dataclasses.dataclass(frozen=True)
class UpdateCheck:
    """An ``<updatecheck>`` answer: ``noupdate``, ``ok`` with URLs and a manifest, or
    ``error-internal`` (Nebraska, beside an ``error-…`` app status)."""

    status: str
    urls: tuple[str, ...] = ()
    manifest: Manifest | None = None
    poll_interval: int | None = None

    @property
    def payload_urls(self) -> tuple[str, ...]:
        """Where update_engine fetches the payload: each codebase + "/" + package name."""
        if self.manifest is None:
            return ()
        name = self.manifest.packages[0].name
        return tuple(url + ("" if url.endswith("/") else "/") + name for url in self.urls)


@dataclasses.dataclass(frozen=True)
class AppResponse:
    """One ``<app>`` of a response."""

    appid: str
    status: str = "ok"
    ping: bool = False
    events: int = 0                #: how many events are acknowledged
    updatecheck: UpdateCheck | None = None


@dataclasses.dataclass(frozen=True)
class Response:
    """A whole response; ``elapsed_seconds`` is seconds since the server's midnight."""

    apps: tuple[AppResponse, ...]
    elapsed_seconds: int = 0
    server: str = "metalcast"


def render_response(response: Response) -> bytes:
    """The response document; a :class:`OmahaInvalid` if a value cannot be sent."""
    lines = ['<?xml version="1.0" encoding="UTF-8"?>',
             f"<response protocol=\"{PROTOCOL}\" server={quote(response.server)}>",
             f' <daystart elapsed_seconds="{int(response.elapsed_seconds)}"></daystart>']
    for app in response.apps:
        if app.status not in APP_STATUSES:
            raise OmahaInvalid(f"app status {app.status!r} is not one update clients know")
        lines.append(f" <app appid={quote(app.appid)} status={quote(app.status)}>")
        if app.ping:
            lines.append('  <ping status="ok"></ping>')
        if app.updatecheck is not None:
            lines.extend(_updatecheck_lines(app.updatecheck))
        lines.extend('  <event status="ok"></event>' for _ in range(app.events))
        lines.append(" </app>")
    lines.append("</response>")
    return ("\n".join(lines) + "\n").encode("utf-8")


def _updatecheck_lines(check: UpdateCheck) -> list[str]:
    if check.status not in UPDATE_STATUSES:
        raise OmahaInvalid(f"updatecheck status {check.status!r}")
    poll = "" if check.poll_interval is None else f' PollInterval="{int(check.poll_interval)}"'
    if check.status != "ok":
        return [f'  <updatecheck status="{check.status}"{poll}></updatecheck>']
    manifest = check.manifest
    if manifest is None or not check.urls or not manifest.packages:
        raise OmahaInvalid("an 'ok' updatecheck needs URLs and a manifest with a package")
    lines = [f'  <updatecheck status="ok"{poll}>', "   <urls>"]
    lines.extend(f"    <url codebase={quote(url)}></url>" for url in check.urls)
    lines += ["   </urls>", f"   <manifest version={quote(manifest.version)}>", "    <packages>"]
    lines.extend(f"     <package{_package_attributes(p)}></package>" for p in manifest.packages)
    lines += ["    </packages>", "    <actions>",
              f"     <action{_action_attributes(manifest)}></action>",
              "    </actions>", "   </manifest>", "  </updatecheck>"]
    return lines


def _package_attributes(package: Package) -> str:
    if package.size <= 0:
        raise OmahaInvalid(f"package {package.name!r} has size {package.size}")
    text = f" name={quote(package.name)}"
    if package.sha1 is not None:
        text += f' hash="{base64.b64encode(omaha_xml.digest(package.sha1, 20)).decode()}"'
    text += f' size="{package.size}" required="{"true" if package.required else "false"}"'
    if package.sha256 is not None:
        text += f' hash_sha256="{omaha_xml.digest(package.sha256, 32).hex()}"'
    return text


def _action_attributes(manifest: Manifest) -> str:
    text = (f' event="postinstall" DisplayVersion={quote(manifest.version)}'
            f' sha256="{base64.b64encode(omaha_xml.digest(manifest.sha256, 32)).decode()}"'
            f' needsadmin="false" IsDeltaPayload="{omaha_xml.boolean(manifest.is_delta)}"'
            f' DisablePayloadBackoff="{omaha_xml.boolean(manifest.disable_payload_backoff)}"')
    if manifest.max_failure_count_per_url is not None:
        text += f' MaxFailureCountPerUrl="{int(manifest.max_failure_count_per_url)}"'
    if manifest.signature is not None:
        text += f' MetalcastSignature="{base64.b64encode(manifest.signature).decode()}"'
    if manifest.delta_base:
        text += f" MetalcastDeltaBase={quote(manifest.delta_base)}"
    return text


def parse_response(body: bytes) -> Response:
    """A response body, checked as update_engine checks it (its rules above), plus our
    bounds; an :class:`OmahaError` subclass naming what is wrong."""
    root = omaha_xml.read(body, "response", omaha_xml.RESPONSE_BOUNDS)
    omaha_xml.require_protocol(root)
    apps = root.findall("app")
    if len(apps) > MAX_APPS:
        raise OmahaLimitExceeded(f"{len(apps)} apps in one response (at most {MAX_APPS})")
    daystart = root.find("daystart")
    elapsed = 0 if daystart is None or daystart.get("elapsed_seconds") is None \
        else omaha_xml.integer(daystart, "elapsed_seconds", -1, 1 << 31)
    return Response(tuple(_app_response(app) for app in apps), elapsed,
                    root.get("server", ""))


def _app_response(app: ET.Element) -> AppResponse:
    check = app.find("updatecheck")
    return AppResponse(omaha_xml.required(app, "appid"), app.get("status", "ok"),
                       app.find("ping") is not None, len(app.findall("event")),
                       None if check is None else _updatecheck(check))


def _updatecheck(check: ET.Element) -> UpdateCheck:
    status = omaha_xml.required(check, "status")
    poll_text = check.get("PollInterval")
    poll = None if poll_text is None else omaha_xml.integer(check, "PollInterval", 0, 1 << 31)
    if status != "ok":
        return UpdateCheck(status, poll_interval=poll)
    urls = check.findall("urls/url")
    manifest = check.find("manifest")
    if not urls or manifest is None:
        raise OmahaInvalid("an 'ok' updatecheck without urls/url or manifest")
    if len(urls) > MAX_URLS:
        raise OmahaLimitExceeded(f"{len(urls)} URLs (at most {MAX_URLS})")
    return UpdateCheck(status, tuple(omaha_xml.required(url, "codebase") for url in urls),
                       _manifest(manifest), poll)


def _manifest(manifest: ET.Element) -> Manifest:
    packages = manifest.findall("packages/package")
    if not packages:
        raise OmahaInvalid("the manifest has no packages/package")
    if len(packages) > MAX_PACKAGES:
        raise OmahaLimitExceeded(f"{len(packages)} packages (at most {MAX_PACKAGES})")
    action = next((a for a in manifest.findall("actions/action")
                   if a.get("event") == "postinstall"), None)
    if action is None:
        raise OmahaInvalid("the manifest has no postinstall action")
    parsed = tuple(_package(p) for p in packages)
    sha256 = omaha_xml.b64_digest(action, "sha256", 32)
    if parsed[0].sha256 is not None and parsed[0].sha256 != sha256:
        raise OmahaInvalid("the payload's hash_sha256 and the postinstall sha256 differ")
    failures = action.get("MaxFailureCountPerUrl")
    return Manifest(manifest.get("version", ""), parsed, sha256,
                    action.get("IsDeltaPayload") == "true",
                    action.get("DisablePayloadBackoff") == "true",
                    None if failures is None
                    else omaha_xml.integer(action, "MaxFailureCountPerUrl", 0, 1 << 16),
                    None if action.get("MetalcastSignature") is None
                    else omaha_xml.b64_digest(action, "MetalcastSignature", 64),
                    _delta_base(action))


def _delta_base(action: ET.Element) -> str:
    base = action.get("MetalcastDeltaBase", "")
    if base not in DELTA_BASES:
        raise OmahaInvalid(f"MetalcastDeltaBase {base[:40]!r}: not one of {DELTA_BASES}")
    return base


def _package(package: ET.Element) -> Package:
    hex_sha256 = package.get("hash_sha256")
    try:
        sha256 = None if hex_sha256 is None else bytes.fromhex(hex_sha256)
    except ValueError:
        sha256 = b""
    if sha256 is not None and len(sha256) != 32:
        raise OmahaInvalid("<package> hash_sha256 is not a hex SHA-256")
    sha1 = None if package.get("hash") is None \
        else omaha_xml.b64_digest(package, "hash", 20)
    return Package(omaha_xml.required(package, "name"),
                   omaha_xml.integer(package, "size", 1, (1 << 63) - 1), sha1, sha256,
                   package.get("required", "true") == "true")
