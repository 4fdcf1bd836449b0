"""The agent's side of the ramdisk API: version discovery, lookup, heartbeat.

Follows the observed IPA behaviour (spec §4): ``GET /`` gives the server's default
version; lookup uses min(that, 1.62) and heartbeat min(that, 1.68) in
``X-OpenStack-Ironic-API-Version``. Lookup is retried (404 means "not in a state
that allows lookup yet") until a deadline. The token from the first successful
lookup is kept for the life of the process: a repeat lookup would only return
``"******"`` and lock the agent out, so nothing here ever looks up twice.

The calls of the start-up (version discovery, lookup, the first heartbeat) share one
kept connection, as a stock IPA's ``requests`` session does: each new connection
costs the API more than a request on a kept one. A heartbeat closes it (the next
call is a beat seconds to minutes away: the connection would only sit idle on the
server, which may close it). A kept connection the server closed meanwhile fails
before any answer: the request is sent once more on a new one. With a proxy set in
the environment for the API's scheme, each call goes through ``urllib`` as before.
"""
from __future__ import annotations

import http.client
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
        self._url = urllib.parse.urlsplit(self.api_url)
        host = self._url.hostname or ""
        self._proxied = bool(urllib.request.getproxies().get(self._url.scheme)) and \
            not urllib.request.proxy_bypass(host)
        self._conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        """Close the kept connection, if any."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _call(self, method: str, path: str, version: tuple | None = None,
              body: dict | None = None, keep: bool = False) -> tuple[int, object]:
        """One request: (status, decoded body). ``keep``: leave the connection open
        for the next call (made at once); otherwise it is closed after this one."""
        headers = {"Accept": "application/json", "User-Agent": f"metalcast-agent/{__version__}"}
        if version:
            headers[VERSION_HEADER] = "%d.%d" % version
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self._proxied:
            status, raw = self._through_urllib(method, path, data, headers)
        else:
            try:
                status, raw = self._exchange(method, path, data, headers)
            finally:
                if not keep:
                    self.close()
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw.decode("utf-8", "replace")

    def _exchange(self, method: str, path: str, data: bytes | None,
                  headers: dict) -> tuple[int, bytes]:
        """Send on the kept connection (opened if none); once more on a new one when a
        kept connection turns out closed by the server before any answer."""
        reused = self._conn is not None
        while True:
            if self._conn is None:
                self._conn = self._open()
            try:
                self._conn.request(method, self._url.path + path, body=data, headers=headers)
                resp = self._conn.getresponse()
                raw = resp.read()
            except (ConnectionResetError, BrokenPipeError) as exc:
                # http.client.RemoteDisconnected (no status line) is a ConnectionResetError
                self.close()
                if not reused:
                    raise
                LOG.debug("Kept API connection closed by the server (%s); reconnecting", exc)
                reused = False
                continue
            except BaseException:
                self.close()
                raise
            if resp.will_close:
                self.close()
            return resp.status, raw

    def _open(self) -> http.client.HTTPConnection:
        host, port = self._url.hostname or "", self._url.port
        if self._url.scheme == "https":
            return http.client.HTTPSConnection(host, port, timeout=self.timeout,
                                               context=self.context)
        return http.client.HTTPConnection(host, port, timeout=self.timeout)

    def _through_urllib(self, method: str, path: str, data: bytes | None,
                        headers: dict) -> tuple[int, bytes]:
        """One call through urllib (the environment's proxy settings apply)."""
        req = urllib.request.Request(self.api_url + path, data=data, method=method,
                                     headers=headers)
        # An opener of this client's own: urlopen()'s global one keeps the proxies of
        # the environment it was first used in.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler(),
                                             urllib.request.HTTPSHandler(context=self.context))
        try:
            with opener.open(req, timeout=self.timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def discover_versions(self) -> None:
        """Cap lookup/heartbeat versions by the server's default version."""
        try:
            status, body = self._call("GET", "/", keep=True)
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
                                  self.lookup_version, keep=True)
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
