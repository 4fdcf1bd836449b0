"""The real clients, unchanged, log in with an openrc: Keystone's password login at
``/v3/auth/tokens`` on a real ``metalcast serve`` (http_basic users), then the API the
catalog names, with the token. openstacksdk and the ``baremetal`` CLI (keystoneauth1),
StarlingX's own ``sw-patch`` (to the patching listener) and ``sw-manager`` (nfv-client's
own urllib login; the orchestration API it then calls is a later issue).
"""
from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import bcrypt
import openstack
import pytest
import requests
from keystoneauth1 import exceptions as ks_exceptions

from tests.functional.conftest import start_server, stop_server
from tests.functional.helpers import unique
from tests.functional.stx_peers import (
    SYSTEM_CONTROLLER,
    controller_standin,
    free_tcp_port,
    openrc,
    peer_python,
    require_peers,
    sw_manager,
    sw_patch,
)

# The SDK warns about its own internals (RemovedInSDK50/60Warning) on every call.
pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")

BAREMETAL = str(Path(sys.executable).parent / "baremetal")
USER = "operator"


@pytest.fixture(scope="module")
def keystone(tmp_path_factory):
    """A server with htpasswd users, the catalog in StarlingX's SystemController region
    (the one region sw-patch logs in to) and the patching listener on a free port."""
    require_peers()
    data_dir = tmp_path_factory.mktemp("metalcast-identity")
    password = f"pw-{uuid.uuid4().hex[:12]}"
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    (data_dir / "htpasswd").write_text(f"{USER}:{hashed}\n")
    server = start_server(data_dir, {
        "api": {"auth_strategy": "http_basic", "htpasswd_file": data_dir / "htpasswd"},
        "identity": {"region": SYSTEM_CONTROLLER},
        "patching": {"listen_port": free_tcp_port()}})
    server.username, server.password = USER, password
    try:
        yield server
    finally:
        stop_server(server.process)


def env_of(server, password: str | None = None, **extra: str) -> dict[str, str]:
    return openrc(f"{server.url}/v3", server.username, password or server.password, **extra)


def sdk(server, auth_url: str, password: str | None = None):
    return openstack.connect(auth_type="password", auth_url=auth_url,
                             username=server.username, password=password or server.password,
                             project_name="admin", user_domain_name="Default",
                             project_domain_name="Default",
                             load_yaml_config=False, load_envvars=False)


def node_names(server) -> set[str]:
    response = requests.get(f"{server.url}/v1/nodes", timeout=30,
                            auth=(server.username, server.password))
    return {n["name"] for n in response.json()["nodes"]}


# -- openstacksdk -----------------------------------------------------------------
def test_openstacksdk_password_login(keystone):
    conn = sdk(keystone, f"{keystone.url}/v3")
    name = unique("sdk-keystone")
    node = conn.baremetal.create_node(driver="fake-hardware", name=name)
    assert name in {n.name for n in conn.baremetal.nodes()}
    data = conn.baremetal.get_endpoint_data()      # found in the catalog, then discovered
    assert data.service_url.rstrip("/") == f"{keystone.url}/v1"
    assert (data.min_microversion, data.max_microversion) == ((1, 1), (1, 115))
    conn.baremetal.delete_node(node)


def test_the_auth_url_names_v3(keystone):
    # GET / is Ironic's version list; listing Identity v3 there too would make
    # keystoneauth's baremetal discovery pick v3 as the newest version.
    conn = sdk(keystone, keystone.url)
    with pytest.raises(ks_exceptions.DiscoveryFailure, match="auth_url"):
        conn.baremetal.nodes().__next__()


def test_openstacksdk_wrong_password_does_nothing(keystone):
    conn = sdk(keystone, f"{keystone.url}/v3", password="wrong-password")
    with pytest.raises(ks_exceptions.Unauthorized):
        conn.baremetal.create_node(driver="fake-hardware", name=unique("never"))
    assert not {n for n in node_names(keystone) if n.startswith("never")}


# -- the baremetal CLI (python-ironicclient) ------------------------------------
def baremetal(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([BAREMETAL, *args], env=env, capture_output=True, text=True,
                          timeout=120)


def test_baremetal_cli_with_an_openrc(keystone):
    env, name = env_of(keystone), unique("cli-keystone")
    created = baremetal(env, "node", "create", "--driver", "fake-hardware", "--name", name,
                        "-f", "json")
    assert created.returncode == 0, created.stderr
    listed = baremetal(env, "node", "list", "-f", "json")
    assert listed.returncode == 0, listed.stderr
    assert name in {n["name"] for n in json.loads(listed.stdout)}
    assert baremetal(env, "node", "delete", name).returncode == 0


def test_baremetal_cli_wrong_password_does_nothing(keystone):
    name = unique("never-cli")
    result = baremetal(env_of(keystone, "wrong-password"), "node", "create", "--driver",
                       "fake-hardware", "--name", name)
    assert result.returncode != 0 and "401" in result.stderr, result.stderr
    assert name not in node_names(keystone)


# -- StarlingX sw-patch ---------------------------------------------------------------
def test_sw_patch_logs_in_and_queries_the_patching_listener(keystone):
    with controller_standin():
        result = sw_patch(env_of(keystone), "--os-region-name", SYSTEM_CONTROLLER, "query")
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert result.stdout.splitlines()[:2] == ["Patch ID  RR  Release  Patch State",
                                              "========  ==  =======  ==========="]
    assert "StarlingX patch API (sw-patch) listening on" in keystone.output()


def test_sw_patch_wrong_password(keystone):
    with controller_standin():
        result = sw_patch(env_of(keystone, "wrong-password"), "--os-region-name",
                          SYSTEM_CONTROLLER, "query")
    assert result.returncode == 255          # exit(-1) after printing keystoneauth's 401
    assert "(HTTP 401)" in result.stdout


# -- StarlingX sw-manager (nfv-client) ----------------------------------------------
def manager_env(server, password: str | None = None) -> dict[str, str]:
    return env_of(server, password, OS_REGION_NAME=SYSTEM_CONTROLLER,
                  OS_INTERFACE="internal")


def test_nfv_client_gets_a_token_and_the_vim_endpoint(keystone):
    code = ("import json, os; from nfv_client.openstack import openstack as o; "
            "t = o.get_token(os.environ['OS_AUTH_URL'], 'admin', 'Default', "
            "os.environ['OS_USERNAME'], os.environ['OS_PASSWORD'], 'Default'); "
            "print(json.dumps([t.get_id(), t.get_tenant_id(), t.is_expired(), "
            "t.get_service_url('SystemController', o.SERVICE.VIM, o.SERVICE_TYPE.NFV, "
            "'internal')]))")
    result = peer_python(manager_env(keystone), code)
    assert result.returncode == 0, result.stderr
    token, project_id, expired, url = json.loads(result.stdout)
    assert url == keystone.url and not expired and len(project_id) == 32
    headers = {"X-Auth-Token": token}
    assert requests.get(f"{keystone.url}/v1/nodes", headers=headers, timeout=30
                        ).status_code == 200


def test_sw_manager_show_reaches_the_vim_url_with_its_token(keystone):
    # The token is taken at the VIM URL: no strategy exists ({"strategy": null}, which
    # the client prints as "No strategy available"); a refused token would be a 401,
    # which it prints as a Rest-API error and exits 1.
    result = sw_manager(manager_env(keystone), "patch-strategy", "show")
    assert (result.returncode, result.stdout) == (0, "No strategy available\n"), result


def test_sw_manager_wrong_password(keystone):
    result = sw_manager(manager_env(keystone, "wrong-password"), "patch-strategy", "show")
    assert result.returncode == 1
    assert "HTTP Error 401" in result.stdout
