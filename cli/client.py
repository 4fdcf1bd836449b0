"""A small REST client for the metalcast (Ironic v1) API, used by the CLI and the demo.

It retries 409 NodeLocked and 503 like ironicclient does, and turns error bodies
into ClientError with the server's message.
"""
from __future__ import annotations

import json
import os
import time

import requests

from cli.errors import CliError

RETRY_STATUSES = (409, 503)


class ClientError(CliError):
    """An API call failed; ``str()`` is the server's message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def error_message(response: requests.Response) -> str:
    """The faultstring (or 406 description) inside Ironic's error body."""
    try:
        inner = json.loads(response.json()["error_message"])
        return inner.get("faultstring") or inner.get("description") or str(inner)
    except (ValueError, KeyError, TypeError):
        return response.text.strip() or response.reason


class Client:
    """Talks to one API endpoint; thread-safe for concurrent use of separate sessions."""

    def __init__(self, url: str | None = None, username: str | None = None,
                 password: str | None = None, retries: int = 5, timeout: float = 60):
        self.url = (url or os.environ.get("METALCAST_URL")
                    or os.environ.get("OS_ENDPOINT") or "http://127.0.0.1:6385").rstrip("/")
        self.session = requests.Session()
        self.session.headers.update({"X-OpenStack-Ironic-API-Version": "latest",
                                     "Accept": "application/json",
                                     "User-Agent": "metalcast-cli"})
        username = username or os.environ.get("METALCAST_USERNAME") or os.environ.get("OS_USERNAME")
        password = password or os.environ.get("METALCAST_PASSWORD") or os.environ.get("OS_PASSWORD")
        if username:
            self.session.auth = (username, password or "")
        self.retries = retries
        self.timeout = timeout

    def request(self, method: str, path: str, body=None, params=None, ok=(200,)):
        for attempt in range(self.retries + 1):
            try:
                response = self.session.request(method, self.url + path, json=body,
                                                params=params, timeout=self.timeout)
            except requests.ConnectionError:
                raise ClientError(0, f"Cannot reach the metalcast API at {self.url}; is "
                                     "`metalcast serve` running? (set --url or "
                                     "METALCAST_URL)") from None
            if response.status_code in RETRY_STATUSES and attempt < self.retries:
                time.sleep(min(0.2 * 2 ** attempt, 2))
                continue
            break
        if response.status_code not in ok:
            raise ClientError(response.status_code, error_message(response))
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    # -- nodes ---------------------------------------------------------------
    def list_nodes(self, detail: bool = False, **params) -> list[dict]:
        path = "/v1/nodes/detail" if detail else "/v1/nodes"
        return self._paged(path, "nodes", params)

    def _paged(self, path: str, key: str, params: dict) -> list[dict]:
        items, params = [], {k: v for k, v in params.items() if v is not None}
        while True:
            page = self.request("GET", path, params=params)
            items.extend(page[key])
            if "next" not in page:
                return items
            params = dict(params, marker=page[key][-1]["uuid"])

    def get_node(self, ident: str) -> dict:
        return self.request("GET", f"/v1/nodes/{ident}")

    def create_node(self, body: dict) -> dict:
        return self.request("POST", "/v1/nodes", body, ok=(201,))

    def update_node(self, ident: str, patch: list) -> dict:
        return self.request("PATCH", f"/v1/nodes/{ident}", patch)

    def delete_node(self, ident: str) -> None:
        self.request("DELETE", f"/v1/nodes/{ident}", ok=(204,))

    def set_provision_state(self, ident: str, target: str, **extra) -> None:
        self.request("PUT", f"/v1/nodes/{ident}/states/provision",
                     dict(extra, target=target), ok=(202,))

    def set_power_state(self, ident: str, target: str) -> None:
        self.request("PUT", f"/v1/nodes/{ident}/states/power", {"target": target}, ok=(202,))

    # -- host agents ---------------------------------------------------------
    def issue_host_agent_token(self, ident: str) -> dict:
        """A new token for the node's host agent (revokes the previous one):
        ``{"token", "node_uuid"}``, via Ironic's node vendor passthru."""
        return self.request("POST", f"/v1/nodes/{ident}/vendor_passthru",
                            params={"method": "issue_host_agent_token"})

    def revoke_host_agent_token(self, ident: str) -> None:
        self.request("DELETE", f"/v1/nodes/{ident}/host_agent_token", ok=(204,))

    # -- ports ---------------------------------------------------------------
    def list_ports(self, detail: bool = False, **params) -> list[dict]:
        return self._paged("/v1/ports/detail" if detail else "/v1/ports", "ports", params)

    def create_port(self, body: dict) -> dict:
        return self.request("POST", "/v1/ports", body, ok=(201,))

    def delete_port(self, port_uuid: str) -> None:
        self.request("DELETE", f"/v1/ports/{port_uuid}", ok=(204,))

    # -- waiting -------------------------------------------------------------
    def wait_for_state(self, ident: str, expected: str, timeout: float = 600,
                       interval: float = 0.5, on_poll=None) -> dict:
        """Poll until ``provision_state == expected``; fail fast on failed states."""
        deadline = time.monotonic() + timeout
        while True:
            node = self.get_node(ident)
            if on_poll:
                on_poll(node)
            state = node["provision_state"]
            if state == expected:
                return node
            if state and (state.endswith("failed") or state == "error") or (
                    expected == "manageable" and state == "enroll" and node.get("last_error")):
                raise ClientError(0, f"Node {ident} went to {state}: {node.get('last_error')}")
            if time.monotonic() > deadline:
                raise ClientError(0, f"Timed out after {timeout:.0f}s waiting for node "
                                     f"{ident} to reach {expected} (now {state})")
            time.sleep(interval)
