"""Small helpers shared by the functional tests."""
from __future__ import annotations

import contextlib
import functools
import threading
import uuid
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import requests

from tests.waiting import wait_until


def unique(prefix: str) -> str:
    """A node name no other test (or earlier run against the same server) uses."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def mac() -> str:
    """A random locally administered unicast MAC address."""
    return "02:" + ":".join(f"{b:02x}" for b in uuid.uuid4().bytes[:5])


HEADERS = {"X-OpenStack-Ironic-API-Version": "latest"}
WAIT = 90  # seconds; generous for a shared 2-core machine, never a timing assertion


def api_call(url: str, method: str, path: str, body=None, ok=(200,), auth=None):
    """One API call (``auth``: basic credentials, if the server wants them); a 409 (a
    periodic task holds the node lock for a moment) is retried, as the Ironic clients
    do. Returns the JSON body or None."""
    last = []

    def answered():
        last[:] = [requests.request(method, url + path, json=body, headers=HEADERS,
                                    timeout=30, auth=auth)]
        return last[0].status_code != 409 or 409 in ok
    wait_until(answered, 10, 0.2, lambda: f"{method} {path} without a 409: {last[0].text}")
    response = last[0]
    assert response.status_code in ok, response.text
    return response.json() if response.content else None


def wait_node(url: str, uuid: str, done, what: str, timeout: float = WAIT,
              auth=None) -> dict:
    """Poll the node until ``done(node)``; fail with the node's last view."""
    seen = {}

    def reached():
        seen.update(api_call(url, "GET", f"/v1/nodes/{uuid}", auth=auth))
        return seen if done(seen) else None
    return wait_until(reached, timeout, 0.1, lambda: f"node {uuid} to become {what}: {seen}")


def provision(url: str, uuid: str, target: str, state: str, auth=None) -> dict:
    """PUT a provision target and wait for ``state`` with the lock released."""
    api_call(url, "PUT", f"/v1/nodes/{uuid}/states/provision", {"target": target},
             ok=(202,), auth=auth)
    return wait_node(url, uuid, lambda n: n["provision_state"] == state
                     and n["reservation"] is None, state, auth=auth)


def agent_sections(power_off_wait: float, callback_timeout: float = 60) -> dict:
    """INI sections for a `metalcast serve` that drives local agents at test speed:
    heartbeats time out after 2 s, command status is polled every 0.2 s, a deploy whose
    agent stops calling back fails after ``callback_timeout`` s, and the node is powered
    off ``power_off_wait`` s after the image is written."""
    return {"agent": {"post_deploy_power_off_wait": power_off_wait, "heartbeat_timeout": 2,
                      "command_wait_interval": 0.2},
            "conductor": {"deploy_callback_timeout": callback_timeout,
                          "check_provision_state_interval": 1}}


@contextlib.contextmanager
def serve_directory(root, handler=SimpleHTTPRequestHandler) -> Iterator[str]:
    """Serve ``root`` over HTTP on 127.0.0.1 (a thread; ``handler`` is a
    SimpleHTTPRequestHandler subclass) and yield its base URL; shut down on exit."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0),
                                functools.partial(handler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)
