"""``metalcast serve``'s patching listener ([patching] listen_host/listen_port): StarlingX's
patch API alone, on real sockets, beside the API port (api/server.py)."""
from __future__ import annotations

import socket

import pytest
import requests

from api.server import Server
from api.starlingx.patching import ROOT_TEXT
from conductor import config, errors


def _settings(tmp_path, port: int, **options):
    return config.from_options({"data_dir": str(tmp_path), "api.port": 0,
                                "pxe.enabled": False, "patching.listen_port": port,
                                **options})


@pytest.fixture
def busy_port():
    """A loopback port another process (here: a listening socket) holds."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_patching_listener_serves_the_patch_api_beside_the_api(tmp_path):
    port = _free_port()
    server = Server(_settings(tmp_path, port))
    server.start_in_thread()
    try:
        assert server.patching_url == f"http://127.0.0.1:{port}"
        assert requests.get(server.patching_url + "/", timeout=10).text == ROOT_TEXT
        for path in ("/patch/query", "/v1/query"):
            for url in (server.patching_url, server.url):
                reply = requests.get(url + path, timeout=10)
                assert (reply.status_code, reply.json()) == (200, {"pd": {}}), url + path
        assert requests.get(server.patching_url + "/v1/nodes", timeout=10).status_code == 404
        assert requests.get(server.url + "/v1/nodes", timeout=10).json() == {"nodes": []}
    finally:
        server.close()


def test_a_port_in_use_stops_serve_naming_the_option(tmp_path, busy_port):
    with pytest.raises(errors.ConfigError) as raised:
        Server(_settings(tmp_path, busy_port))
    message = str(raised.value)
    assert f"cannot listen for the patch API on 127.0.0.1 port {busy_port}: another " \
        "process already listens there" in message
    assert "[patching] listen_port" in message and "to 0" in message


def test_port_zero_disables_the_listener(tmp_path):
    server = Server(_settings(tmp_path, 0))
    try:
        assert server.patching_url is None
    finally:
        server.close()
