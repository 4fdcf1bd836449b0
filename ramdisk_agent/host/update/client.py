"""The appliance as the update engine sees it: Omaha over HTTP(S), and reboot leases.

:class:`OmahaClient` posts update_engine's request XML (ramdisk_agent/wire/omaha.py)
to ``SERVER`` and parses the answer with update_engine's rules; a transport failure
is error 2000 + HTTP status (or 2, OmahaRequestError, without one), an unreadable
answer 31/34, as update_engine numbers them. :class:`LeaseClient` speaks the
appliance's lease API (``POST <appliance>/updates/v1/leases``, JSON, authenticated
with the host agent's token; an acquire may ask the appliance to hold it until a slot
frees). Answers are read with a size cap: a hostile server
cannot make the agent buffer gigabytes.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import ssl
import urllib.error
import urllib.request
import uuid
from typing import Any

from ramdisk_agent import __version__
from ramdisk_agent.errors import UpdateEngineError
from ramdisk_agent.wire import omaha, omaha_codes
from ramdisk_agent.wire.errors import WireError

LOG = logging.getLogger(__name__)
MAX_ANSWER = 1 << 20
OMAHA_REQUEST_ERROR, XML_PARSE_ERROR, RESPONSE_INVALID = 2, 31, 34


def _context(ca_file: str | None, insecure: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca_file)
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _post(url: str, body: bytes, content_type: str, timeout: float,
          context: ssl.SSLContext) -> tuple[int, bytes]:
    """(status, body) of a POST; HTTP errors are answers too, network errors raise."""
    request = urllib.request.Request(url, body, method="POST", headers={
        "Content-Type": content_type, "User-Agent": f"metalcast-agent/{__version__}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as reply:
            return reply.status, reply.read(MAX_ANSWER + 1)
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read(MAX_ANSWER + 1)


@dataclasses.dataclass
class Identity:
    """Who asks: the <app> attributes that stay the same between requests."""

    appid: str
    version: str
    track: str
    machineid: str
    bootid: str = dataclasses.field(default_factory=lambda: "{" + str(uuid.uuid4()) + "}")


class OmahaClient:
    def __init__(self, server: str, identity: Identity, *, ca_file: str | None = None,
                 insecure: bool = False, timeout: float = 30.0):
        self.server, self.identity, self.timeout = server, identity, timeout
        self._context = _context(ca_file, insecure)

    def check(self, *, delta_okay: bool, interactive: bool, passive_version: str = ""
              ) -> omaha.UpdateCheck:
        """One ``<updatecheck>`` (with a ping); the answer's updatecheck.
        ``passive_version``: what the passive slot is known to hold (a delta from it
        can be applied in place)."""
        app = self._app(delta_okay=delta_okay, ping=True, updatecheck=True,
                        passive_version=passive_version)
        answer = self._send(app, interactive)
        if answer.updatecheck is None:
            raise UpdateEngineError(f"{self.server} answered without an updatecheck",
                                    RESPONSE_INVALID)
        return answer.updatecheck

    def event(self, event: omaha.Event, *, version: str | None = None) -> None:
        """Report one event (Omaha events grant nothing; a lost one is only logged)."""
        self._send(self._app(events=(event,), version=version), False)

    def ping(self) -> None:
        """A ping without a check: reaching the appliance (a health check)."""
        self._send(self._app(ping=True), False)

    def _app(self, *, delta_okay: bool = False, ping: bool = False, updatecheck: bool = False,
             events: tuple[omaha.Event, ...] = (), version: str | None = None,
             passive_version: str = "") -> omaha.AppRequest:
        ident = self.identity
        return omaha.AppRequest(ident.appid, version or ident.version, ident.track,
                                ident.bootid, ident.machineid, delta_okay=delta_okay,
                                ping=ping, updatecheck=updatecheck, events=events,
                                passive_version=passive_version)

    def _send(self, app: omaha.AppRequest, interactive: bool) -> omaha.AppResponse:
        request = omaha.Request((app,), omaha.OsInfo("Chateau", "metalcast"),
                                version=f"metalcast-agent-{__version__}",
                                updaterversion=f"metalcast-agent-{__version__}",
                                installsource="ondemandupdate" if interactive else "scheduler")
        try:
            status, body = _post(self.server, omaha.render_request(request), "text/xml",
                                 self.timeout, self._context)
        except (OSError, ValueError) as exc:
            raise UpdateEngineError(f"the update server {self.server} cannot be reached: "
                                    f"{exc}", OMAHA_REQUEST_ERROR) from None
        if status != 200:
            raise UpdateEngineError(f"the update server {self.server} answered HTTP "
                                    f"{status}", omaha_codes.HTTP_BASE + min(status, 999))
        if len(body) > MAX_ANSWER:
            raise UpdateEngineError(f"the answer of {self.server} is over {MAX_ANSWER} "
                                    "bytes", XML_PARSE_ERROR)
        try:
            response = omaha.parse_response(body)
        except WireError as exc:
            raise UpdateEngineError(f"the answer of {self.server} is invalid: {exc}",
                                    RESPONSE_INVALID) from None
        app_answer = next((a for a in response.apps if a.appid == app.appid), None)
        if app_answer is None:
            raise UpdateEngineError(f"{self.server} did not answer for app {app.appid}",
                                    RESPONSE_INVALID)
        if app_answer.status != "ok":
            meaning = omaha.APP_STATUSES.get(app_answer.status, "")
            raise UpdateEngineError(f"the update server refused: {app_answer.status} "
                                    f"({meaning})", RESPONSE_INVALID,
                                    details=app_answer.status)
        return app_answer


class _WaitRefused(Exception):
    """An appliance from before held acquires refused the ``wait`` field."""


@dataclasses.dataclass(frozen=True)
class LeaseAnswer:
    held: bool
    retry_after: float = 0.0
    ttl: float = 300.0
    holders: int = 0
    max: int = 0
    expires_at: str = ""


class LeaseClient:
    """The appliance's reboot lease semaphore (a locksmith that cannot deadlock: a
    lease expires unless renewed)."""

    def __init__(self, url: str, node: str, token: str, group: str = "default", *,
                 ca_file: str | None = None, insecure: bool = False, timeout: float = 30.0):
        self.url, self.node, self.token, self.group = url, node, token, group
        self.timeout = timeout
        self._context = _context(ca_file, insecure)
        self._no_wait = False

    def acquire(self, wait: float = 0.0) -> LeaseAnswer:
        """Take a lease; with ``wait``, the appliance holds a refused request up to that
        many seconds and answers as soon as a slot frees (an appliance that does not
        know ``wait`` answers 400: this client then polls, as before)."""
        if wait > 0 and not self._no_wait:
            try:
                return self._call("acquire", wait)
            except _WaitRefused:
                LOG.info("The appliance at %s does not hold lease requests: polling",
                         self.url)
                self._no_wait = True
        return self._call("acquire")

    def renew(self) -> LeaseAnswer:
        return self._call("renew")

    def release(self) -> LeaseAnswer:
        return self._call("release")

    def _call(self, action: str, wait: float = 0.0) -> LeaseAnswer:
        doc: Any = {"node": self.node, "agent_token": self.token, "action": action,
                    "group": self.group}
        if wait:
            doc["wait"] = wait
        try:
            status, raw = _post(self.url, json.dumps(doc).encode(), "application/json",
                                self.timeout + wait, self._context)
            doc = json.loads(raw[:MAX_ANSWER]) if raw else {}
        except (OSError, ValueError, RecursionError) as exc:   # RecursionError: nested JSON
            raise UpdateEngineError(f"lease {action} at {self.url} failed: "
                                    f"{str(exc)[:200]}") from None
        if status == 401:
            raise UpdateEngineError(f"the appliance refused this host's agent token for "
                                    f"the lease ({self.url}): issue a new one with "
                                    "'metalcast host token NODE --output FILE'")
        if status == 400 and wait:
            raise _WaitRefused()
        if status not in (200, 409) or not isinstance(doc, dict):
            raise UpdateEngineError(f"lease {action} at {self.url}: HTTP {status} "
                                    f"{str(doc)[:200]}")
        try:
            return LeaseAnswer(bool(doc.get("held")), float(doc.get("retry_after") or 0),
                               float(doc.get("ttl") or 300), int(doc.get("holders") or 0),
                               int(doc.get("max") or 0), str(doc.get("expires_at") or ""))
        except (TypeError, ValueError) as exc:
            raise UpdateEngineError(f"lease answer of {self.url} is malformed: {exc}") \
                from None
