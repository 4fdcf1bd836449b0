"""The orchestration API on a real ``metalcast serve``: on its API port and on the VIM
port ([api] vim_port, StarlingX's 4545), which the Identity catalog then names for
``vim``/``nfv``; StarlingX's own ``sw-manager`` (stx_peers.py) finds it there and
drives it unchanged. Bad requests over real sockets: wrong credentials, malformed and
oversized bodies, routes the VIM port does not serve; each a clear 4xx and nothing
changed. (The walkthroughs with real host agents are test_sw_manager.py and
test_orchestration_walkthrough.py.)"""
from __future__ import annotations

import json
import uuid

import bcrypt
import pytest
import requests

from tests.functional.conftest import start_server, stop_server
from tests.functional.stx_peers import (
    SYSTEM_CONTROLLER,
    free_tcp_port,
    openrc,
    peer_python,
    require_peers,
    sw_manager,
)

USER = "operator"
PATH = "/api/orchestration/sw-patch/strategy"
CREATE = {"controller-apply-type": "serial", "storage-apply-type": "serial",
          "worker-apply-type": "serial", "default-instance-action": "migrate"}


@pytest.fixture(scope="module")
def vim(tmp_path_factory):
    require_peers()
    data_dir = tmp_path_factory.mktemp("metalcast-vim")
    password = f"pw-{uuid.uuid4().hex[:12]}"
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    (data_dir / "htpasswd").write_text(f"{USER}:{hashed}\n")
    port = free_tcp_port()
    server = start_server(data_dir, {
        "api": {"auth_strategy": "http_basic", "htpasswd_file": data_dir / "htpasswd",
                "vim_port": port},
        "identity": {"region": SYSTEM_CONTROLLER}})
    server.vim_url, server.auth = f"http://127.0.0.1:{port}", (USER, password)
    try:
        assert f"StarlingX orchestration API (sw-manager) listening on {server.vim_url}" \
            in server.output()
        yield server
    finally:
        stop_server(server.process)


@pytest.fixture(autouse=True)
def no_strategy(vim):
    yield
    requests.delete(vim.url + PATH, json={"force": True}, auth=vim.auth, timeout=30)


def env(server, password: str | None = None) -> dict[str, str]:
    return openrc(f"{server.url}/v3", USER, password or server.auth[1],
                  OS_REGION_NAME=SYSTEM_CONTROLLER, OS_INTERFACE="internal")


def test_the_catalog_names_the_vim_port(vim):
    code = ("import os; from nfv_client.openstack import openstack as o; "
            "t = o.get_token(os.environ['OS_AUTH_URL'], 'admin', 'Default', "
            "os.environ['OS_USERNAME'], os.environ['OS_PASSWORD'], 'Default'); "
            "print(t.get_service_url('SystemController', o.SERVICE.VIM, "
            "o.SERVICE_TYPE.NFV, 'internal'))")
    result = peer_python(env(vim), code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == vim.vim_url


def test_stx_sw_manager_through_the_vim_port(vim):
    """No patch uploaded: the build fails with StarlingX's reason; the peer shows it,
    refuses a second create, deletes it."""
    result = sw_manager(env(vim), "patch-strategy", "create")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("Strategy Patch Strategy:\n"), result.stdout
    shown = requests.get(vim.vim_url + PATH, auth=vim.auth, timeout=30).json()["strategy"]
    assert shown["state"] == "build-failed"
    assert shown["build-phase"]["reason"] == "no software patches found"
    result = sw_manager(env(vim), "patch-strategy", "show")
    assert result.returncode == 0 and "build-failed" in result.stdout, result.stdout
    again = sw_manager(env(vim), "patch-strategy", "create")
    assert "conflict" in (again.stdout + again.stderr).lower()
    # the same strategy on the API port
    assert requests.get(vim.url + PATH, auth=vim.auth, timeout=30).json()["strategy"][
        "uuid"] == shown["uuid"]
    result = sw_manager(env(vim), "patch-strategy", "delete")
    assert (result.returncode, result.stdout) == (0, "Strategy deleted\n"), result
    result = sw_manager(env(vim), "patch-strategy", "show")
    assert result.stdout == "No strategy available\n"


def test_the_vim_port_serves_orchestration_only_and_authenticated(vim):
    assert requests.get(vim.vim_url + PATH, timeout=30).status_code == 401
    assert requests.get(vim.vim_url + PATH, auth=(USER, "wrong"), timeout=30
                        ).status_code == 401
    assert requests.get(vim.vim_url + "/v1/nodes", auth=vim.auth, timeout=30
                        ).status_code == 404
    ok = requests.get(vim.vim_url + PATH, auth=vim.auth, timeout=30)
    assert ok.status_code == 200 and ok.json() == {"strategy": None}


@pytest.mark.parametrize("base", ["url", "vim_url"])
def test_bad_requests_over_real_sockets(vim, base):
    url = getattr(vim, base) + PATH
    headers = {"Content-Type": "application/json"}
    for body, status in ((b"{", 400), (b'{"controller-apply-type": 1}', 400),
                         (json.dumps(dict(CREATE, **{"max-parallel-worker-hosts": 101})), 400),
                         (b"{" + b" " * (200 << 10) + b"}", 413)):
        response = requests.post(url, data=body, headers=headers, auth=vim.auth, timeout=30)
        assert response.status_code == status, response.text
    response = requests.post(url + "/actions", json={"action": "apply-all"}, auth=vim.auth,
                             timeout=30)
    assert response.status_code == 404 and response.json()["faultstring"]
    assert requests.get(f"{url}/{uuid.uuid4()}", auth=vim.auth, timeout=30).status_code == 404
    assert requests.get(f"{url}/1234", auth=vim.auth, timeout=30).status_code == 400
    assert requests.get(url, auth=vim.auth, timeout=30).json() == {"strategy": None}
