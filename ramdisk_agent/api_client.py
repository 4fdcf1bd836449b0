"""The agent's side of the ramdisk API: version discovery, lookup, heartbeat.

Follows the observed IPA behaviour (spec §4): ``GET /`` gives the server's default
version; lookup uses min(that, 1.62) and heartbeat min(that, 1.68) in
``X-OpenStack-Ironic-API-Version``. Lookup is retried (404 means "not in a state
that allows lookup yet") until a deadline. The token from the first successful
lookup is kept for the life of the process: a repeat lookup would only return
``"******"`` and lock the agent out, so nothing here ever looks up twice.
"""
from __future__ import annotations

import json
import logging
import random
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from ramdisk_agent import __version__
from ramdisk_agent.errors import HeartbeatError, LookupFailed

LOG = logging.getLogger(__name__)

LOOKUP_VERSION = (1, 62)
HEARTBEAT_VERSION = (1, 68)
MIN_LOOKUP_VERSION = (1, 22)
VERSION_HEADER = "X-OpenStack-Ironic-API-Version"
MAX_LOOKUP_DELAY = 10.0       # back-off cap between lookups


@dataclass
class LookupResult:
    node: dict
    config: dict

    @property
    def uuid(self) -> str:
        return self.node["uuid"]

    @property
    def token(self) -> str | None:
        token = self.config.get("agent_token")
        return None if not token or token == "******" else token


def _version(text: str) -> tuple[int, int]:
    major, minor = text.split(".")
    return int(major), int(minor)


class ApiClient:
    """HTTP(S) client of the metalcast (or Ironic) API for the ramdisk endpoints."""

    def __init__(self, api_url: str, insecure: bool = False, ca_file: str | None = None,
                 timeout: float = 30.0):
        self.api_url = api_url.rstrip("/")
        self.timeout = timeout
        self.context = None
        if self.api_url.startswith("https"):
            self.context = ssl.create_default_context(cafile=ca_file)
            if insecure:
                self.context.check_hostname = False
                self.context.verify_mode = ssl.CERT_NONE
        self.lookup_version, self.heartbeat_version = LOOKUP_VERSION, HEARTBEAT_VERSION

    def _call(self, method: str, path: str, version: tuple | None = None,
              body: dict | None = None) -> tuple[int, object]:
        headers = {"Accept": "application/json", "User-Agent": f"metalcast-agent/{__version__}"}
        if version:
            headers[VERSION_HEADER] = "%d.%d" % version
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.api_url + path, data=data, method=method,
                                     headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self.context) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw.decode("utf-8", "replace")

    def discover_versions(self) -> None:
        """Cap lookup/heartbeat versions by the server's default version."""
        try:
            status, body = self._call("GET", "/")
            server = _version(body["default_version"]["version"])  # type: ignore[index]
        except (OSError, KeyError, TypeError, ValueError) as exc:
            LOG.warning("API version discovery failed (%s); using %s/%s", exc,
                        LOOKUP_VERSION, HEARTBEAT_VERSION)
            return
        self.lookup_version = min(server, LOOKUP_VERSION)
        self.heartbeat_version = min(server, HEARTBEAT_VERSION)
        if self.lookup_version < MIN_LOOKUP_VERSION:
            raise LookupFailed(f"The API at {self.api_url} is too old (version "
                               f"{server}); lookup needs 1.22")

    def lookup_once(self, macs: list[str], node_uuid: str | None) -> LookupResult | None:
        """One lookup attempt: the result, or None when the node is not (yet) found."""
        query = {"addresses": ",".join(macs)}
        if node_uuid:
            query["node_uuid"] = node_uuid
        status, body = self._call("GET", "/v1/lookup?" + urllib.parse.urlencode(query),
                                  self.lookup_version)
        if status == 200 and isinstance(body, dict) and "node" in body:
            return LookupResult(node=body["node"], config=body.get("config") or {})
        if status == 400:
            raise LookupFailed(f"Lookup refused by the API: {body}")
        LOG.info("Lookup for %s: HTTP %s, retrying", macs, status)
        return None

    def lookup(self, macs: list[str], node_uuid: str | None, timeout: float,
               sleep=time.sleep) -> LookupResult:
        """Lookup until it succeeds or ``timeout`` seconds have passed."""
        deadline, delay = time.monotonic() + timeout, 1.0
        while True:
            try:
                result = self.lookup_once(macs, node_uuid)
            except OSError as exc:
                LOG.warning("Lookup at %s failed: %s", self.api_url, exc)
                result = None
            if result is not None:
                if result.token is None:
                    raise LookupFailed(f"Lookup of node {result.uuid} returned no usable "
                                       "agent token (already issued?); reboot the node")
                return result
            if time.monotonic() + delay > deadline:
                raise LookupFailed(f"Lookup of {macs} did not succeed within {timeout}s")
            sleep(delay)
            delay = min(delay * 2, MAX_LOOKUP_DELAY) * random.uniform(0.8, 1.0) + 0.2

    def heartbeat(self, node_uuid: str, callback_url: str, token: str,
                  verify_ca: str | None = None, status: str | None = None,
                  message: str | None = None) -> None:
        """One heartbeat; :class:`HeartbeatError` unless the API answers 202."""
        body = {"callback_url": callback_url, "agent_token": token,
                "agent_version": __version__}
        if verify_ca:
            body["agent_verify_ca"] = verify_ca
        if status:
            body["agent_status"], body["agent_status_message"] = status, message or ""
        code, reply = self._call("POST", f"/v1/heartbeat/{node_uuid}",
                                 self.heartbeat_version, body)
        if code != 202:
            raise HeartbeatError(code, str(reply))
