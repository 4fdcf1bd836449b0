"""Conductor side of the ramdisk endpoints (lookup, heartbeat) through Flask's test
client, over a real SQLite store and fake power: allowed states, the one-time token,
refusals that store nothing, 409 on a locked node, timeouts and token wiping."""
import datetime
import json
import threading
from types import SimpleNamespace

import bcrypt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from conductor.engine import workers
from ramdisk_agent.commands import CommandRunner
from ramdisk_agent.extensions.deploy import DeployExtension
from ramdisk_agent.extensions.standby import StandbyExtension
from ramdisk_agent.server import create_app, make_certificate, serve_https
from ramdisk_agent.wire.agent_tokens import token_hash
from tests.waiting import wait_until

LATEST = {"X-OpenStack-Ironic-API-Version": "latest"}
AGENT = {"X-OpenStack-Ironic-API-Version": "1.68"}
DIGEST = "ab" * 32
MAC = "52:54:00:12:34:56"


@pytest.fixture
def app_defaults() -> dict:
    """make_app (tests/integration/conftest.py) with short agent command timeouts."""
    return {"pxe.enabled": False, "agent.command_timeout": 2.0,
            "agent.max_command_attempts": 1}


@pytest.fixture
def app(make_app):
    return make_app()


def error_of(response) -> str:
    return json.loads(response.get_json()["error_message"])["faultstring"]


def get_node(client, uuid):
    return client.get(f"/v1/nodes/{uuid}", headers=LATEST).get_json()


def wait_for(client, uuid, state, timeout=15):
    seen = {}

    def reached():
        seen.update(get_node(client, uuid))
        return seen if seen["provision_state"] == state and seen["reservation"] is None \
            else None
    return wait_until(reached, timeout, 0.02, lambda: f"node to reach {state} unlocked; stuck "
                      f"in {seen.get('provision_state')}: {seen.get('last_error')}")


def waiting_node(client, mac=MAC, image="file:///srv/image.raw"):
    """A direct-deploy node in "wait call-back", its agent not yet looked up."""
    body = {"driver": "fake-hardware", "deploy_interface": "direct",
            "automated_clean": False,
            "instance_info": {"image_source": image, "image_os_hash_algo": "sha256",
                              "image_os_hash_value": DIGEST}}
    node = client.post("/v1/nodes", json=body, headers=LATEST).get_json()
    assert client.post("/v1/ports", json={"node_uuid": node["uuid"], "address": mac},
                       headers=LATEST).status_code == 201
    for target, state in (("manage", "manageable"), ("provide", "available"),
                          ("active", "wait call-back")):
        response = client.put(f"/v1/nodes/{node['uuid']}/states/provision",
                              json={"target": target}, headers=LATEST)
        assert response.status_code == 202, response.get_json()
        wait_for(client, node["uuid"], state)
    return node["uuid"]


def lookup(client, **query):
    return client.get("/v1/lookup", query_string=query, headers=AGENT)


def token_of(client, uuid) -> str:
    return lookup(client, node_uuid=uuid).get_json()["config"]["agent_token"]


def beat(client, uuid, token, url="https://127.0.0.1:1", headers=AGENT, **extra):
    body = dict({"callback_url": url, "agent_token": token, "agent_version": "13.0.0"},
                **extra)
    return client.post(f"/v1/heartbeat/{uuid}", json=body, headers=headers)


def internal(appliance, uuid):
    return appliance.store.get_node(uuid).driver_internal_info or {}


def hold(client, uuid):
    """Maintenance: heartbeats are recorded but drive nothing (no agent to reach)."""
    client.put(f"/v1/nodes/{uuid}/maintenance", json={"reason": "hold"}, headers=LATEST)


def certificate(name="agent") -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode()


# -- lookup -----------------------------------------------------------------------
def test_lookup_needs_1_22_and_an_address_or_uuid(app):
    client, _ = app
    old = client.get("/v1/lookup", query_string={"addresses": MAC},
                     headers={"X-OpenStack-Ironic-API-Version": "1.21"})
    assert old.status_code == 404
    assert lookup(client).status_code == 400
    response = lookup(client, addresses="not-a-mac,zz")
    assert response.status_code == 400 and "addresses" in error_of(response)


def test_lookup_hides_nodes_outside_the_wait_states(app):
    client, _ = app
    node = client.post("/v1/nodes", json={"driver": "fake-hardware"}, headers=LATEST)
    uuid = node.get_json()["uuid"]
    client.post("/v1/ports", json={"node_uuid": uuid, "address": MAC}, headers=LATEST)
    refused = lookup(client, addresses=MAC)
    unknown = lookup(client, addresses="52:54:00:ff:ff:ff")
    assert refused.status_code == unknown.status_code == 404
    assert error_of(refused) == error_of(unknown)  # no hint which one exists
    assert lookup(client, node_uuid=uuid).status_code == 404


def test_token_is_issued_once_then_masked_everywhere(app):
    client, appliance = app
    uuid = waiting_node(client)
    first = lookup(client, addresses=f"{MAC.upper()},bogus")
    assert first.status_code == 200
    body = first.get_json()
    token = body["config"]["agent_token"]
    assert len(token) >= 32 and body["config"]["agent_token_required"] is True
    assert body["config"]["heartbeat_timeout"] == 300
    assert body["node"]["uuid"] == uuid
    assert set(body["node"]) == {"uuid", "properties", "instance_info",
                                 "driver_internal_info", "links"}
    assert body["node"]["driver_internal_info"]["agent_secret_token"] == "******"
    stored = internal(appliance, uuid)
    assert token not in json.dumps(stored)          # hashed, and encrypted for commands
    again = lookup(client, node_uuid=uuid).get_json()
    assert again["config"]["agent_token"] == "******"
    shown = get_node(client, uuid)["driver_internal_info"]
    assert shown["agent_secret_token"] == shown["agent_token_hash"] == "******"
    assert internal(appliance, uuid) == stored      # unchanged


# -- heartbeat --------------------------------------------------------------------
@pytest.mark.parametrize("token", [None, "", "x" * 43])
def test_heartbeat_with_a_wrong_token_is_400_and_stores_nothing(app, token):
    client, appliance = app
    uuid = waiting_node(client)
    token_of(client, uuid)
    before = appliance.store.get_node(uuid)
    body = {"callback_url": "https://127.0.0.1:1", "agent_version": "13.0.0"}
    if token is not None:
        body["agent_token"] = token
    response = client.post(f"/v1/heartbeat/{uuid}", json=body, headers=AGENT)
    assert response.status_code == 400
    assert error_of(response) == "Invalid or missing agent token received."
    after = appliance.store.get_node(uuid)
    assert after.driver_internal_info == before.driver_internal_info
    assert after.provision_state == "wait call-back" and after.reservation is None


def test_heartbeat_before_lookup_is_refused(app):
    client, _ = app
    uuid = waiting_node(client)
    assert beat(client, uuid, "anything").status_code == 400


def test_http_callback_refused_unless_tls_is_turned_off(make_app):
    client, appliance = make_app()
    uuid = waiting_node(client)
    response = beat(client, uuid, token_of(client, uuid), url="http://127.0.0.1:9999")
    assert response.status_code == 400 and "require_tls" in error_of(response)
    assert "agent_url" not in internal(appliance, uuid)

    client, appliance = make_app({"agent.require_tls": False})
    uuid = waiting_node(client)
    token = token_of(client, uuid)
    hold(client, uuid)
    assert beat(client, uuid, token, url="http://127.0.0.1:9999").status_code == 202
    assert internal(appliance, uuid)["agent_url"] == "http://127.0.0.1:9999"


def test_heartbeat_records_and_refuses_a_changed_url_or_certificate(app):
    client, appliance = app
    uuid = waiting_node(client)
    token = token_of(client, uuid)
    hold(client, uuid)
    pem = certificate()
    assert beat(client, uuid, token, agent_verify_ca=pem).status_code == 202
    info = internal(appliance, uuid)
    assert info["agent_url"] == "https://127.0.0.1:1" and info["agent_version"] == "13.0.0"
    assert info["agent_verify_ca"] == pem and "agent_last_heartbeat" in info
    moved = beat(client, uuid, token, url="https://127.0.0.1:2")
    assert moved.status_code == 400 and "callback_url" in error_of(moved)
    other = beat(client, uuid, token, agent_verify_ca=certificate("other"))
    assert other.status_code == 400 and "agent_verify_ca" in error_of(other)
    junk = beat(client, uuid, token, agent_verify_ca="not a certificate")
    assert junk.status_code == 400
    no_version = beat(client, uuid, token, agent_version=None)
    assert no_version.status_code == 400 and "agent_version" in error_of(no_version)
    garbage = beat(client, uuid, token, url="ftp://127.0.0.1:1")
    assert garbage.status_code == 400 and "callback_url" in error_of(garbage)
    assert internal(appliance, uuid) == info


def test_heartbeat_fields_follow_the_microversion(app):
    client, _ = app
    uuid = waiting_node(client)
    token = token_of(client, uuid)
    too_old = beat(client, uuid, token, agent_verify_ca=certificate(),
                   headers={"X-OpenStack-Ironic-API-Version": "1.62"})
    assert too_old.status_code == 400 and "agent_verify_ca" in error_of(too_old)
    below = beat(client, uuid, token, headers={"X-OpenStack-Ironic-API-Version": "1.21"})
    assert below.status_code == 404
    unknown = beat(client, uuid, token, surprise="x")
    assert unknown.status_code == 400 and "surprise" in error_of(unknown)


def test_locked_node_answers_409_to_lookup_and_heartbeat(app):
    client, appliance = app
    uuid = waiting_node(client)
    node = appliance.store.get_node(uuid)
    appliance.store.reserve(node, "other-conductor")
    assert lookup(client, node_uuid=uuid).status_code == 409
    assert "agent_secret_token" not in internal(appliance, uuid)
    appliance.store.release(node.id, "other-conductor")
    token = token_of(client, uuid)
    appliance.store.reserve(node, "other-conductor")
    assert beat(client, uuid, token).status_code == 409
    assert "agent_url" not in internal(appliance, uuid)


def test_unreachable_agent_fails_the_deploy_with_last_error(app):
    client, appliance = app
    uuid = waiting_node(client)
    assert beat(client, uuid, token_of(client, uuid)).status_code == 202  # port 1: closed
    node = wait_for(client, uuid, "deploy failed")
    assert "agent" in node["last_error"] and "127.0.0.1:1" in node["last_error"]
    assert "agent_secret_token" not in internal(appliance, uuid)  # powered off: wiped
    assert node["power_state"] == "power off"


def test_power_off_wipes_the_token_and_a_new_lookup_gets_a_new_one(app):
    client, appliance = app
    uuid = waiting_node(client)
    first = token_of(client, uuid)
    response = client.put(f"/v1/nodes/{uuid}/states/power", json={"target": "power off"},
                          headers=LATEST)
    assert response.status_code == 202
    wait_until(lambda: "agent_secret_token" not in internal(appliance, uuid), 10, 0.02,
               lambda: f"the token wiped: {internal(appliance, uuid)}")
    second = token_of(client, uuid)
    assert second not in (first, "******")
    assert beat(client, uuid, first).status_code == 400


def test_callback_timeout_fails_the_waiting_node_and_wipes_its_agent(app):
    client, appliance = app
    uuid = waiting_node(client)
    token_of(client, uuid)
    later = datetime.datetime.now(datetime.UTC).replace(tzinfo=None) \
        + datetime.timedelta(seconds=appliance.settings.conductor.deploy_callback_timeout + 5)
    assert workers.check_wait_timeouts(appliance.store, appliance.settings, appliance.drivers,
                                    now=later) == 1
    node = get_node(client, uuid)
    assert node["provision_state"] == "deploy failed"
    assert "deploy_callback_timeout" in node["last_error"]
    assert "agent_secret_token" not in internal(appliance, uuid)


def test_deploy_refuses_an_unusable_image_checksum(app):
    client, _ = app
    node = client.post("/v1/nodes", headers=LATEST, json={
        "driver": "fake-hardware", "deploy_interface": "direct", "automated_clean": False,
        "instance_info": {"image_source": "http://127.0.0.1:1/x.img",
                          "image_checksum": "d41d8cd98f00b204e9800998ecf8427e"}}).get_json()
    for target, state in (("manage", "manageable"), ("provide", "available")):
        client.put(f"/v1/nodes/{node['uuid']}/states/provision", json={"target": target},
                   headers=LATEST)
        wait_for(client, node["uuid"], state)
    response = client.put(f"/v1/nodes/{node['uuid']}/states/provision",
                          json={"target": "active"}, headers=LATEST)
    assert response.status_code == 400 and "MD5" in error_of(response)
    assert get_node(client, node["uuid"])["provision_state"] == "available"


def test_ramdisk_endpoints_need_no_api_credentials(make_app, tmp_path):
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text("op:" + bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode() + "\n")
    client, _ = make_app({"api.auth_strategy": "http_basic", "api.htpasswd_file": str(htpasswd)})
    assert client.get("/v1/nodes", headers=LATEST).status_code == 401
    assert lookup(client, addresses=MAC).status_code == 404  # reached the endpoint
    assert beat(client, "00000000-0000-0000-0000-000000000000", "t").status_code == 404


def test_unreachable_image_fails_the_deploy_before_the_reboot(app):
    client, _ = app
    body = {"driver": "fake-hardware", "deploy_interface": "direct", "automated_clean": False,
            "instance_info": {"image_source": "http://127.0.0.1:1/missing.img",
                              "image_os_hash_algo": "sha256", "image_os_hash_value": DIGEST}}
    uuid = client.post("/v1/nodes", json=body, headers=LATEST).get_json()["uuid"]
    for target, state in (("manage", "manageable"), ("provide", "available"),
                          ("active", "deploy failed")):
        client.put(f"/v1/nodes/{uuid}/states/provision", json={"target": target},
                   headers=LATEST)
        node = wait_for(client, uuid, state)
    assert "validation of image href http://127.0.0.1:1/missing.img" in node["last_error"]
    assert (node["deploy_step"] or {}).get("step") != "deploy"  # never rebooted


def test_clean_wait_times_out_into_clean_failed(app):
    client, appliance = app
    node = client.post("/v1/nodes", json={"driver": "fake-hardware",
                                          "deploy_interface": "direct"},
                       headers=LATEST).get_json()
    uuid = node["uuid"]
    client.post("/v1/ports", json={"node_uuid": uuid, "address": MAC}, headers=LATEST)
    for target, state in (("manage", "manageable"), ("provide", "clean wait")):
        client.put(f"/v1/nodes/{uuid}/states/provision", json={"target": target},
                   headers=LATEST)
        wait_for(client, uuid, state)
    assert lookup(client, addresses=MAC).status_code == 200  # cleaning: lookup allowed
    later = datetime.datetime.now(datetime.UTC).replace(tzinfo=None) \
        + datetime.timedelta(seconds=appliance.settings.conductor.clean_callback_timeout + 5)
    assert workers.check_wait_timeouts(appliance.store, appliance.settings, appliance.drivers,
                                    now=later) == 1
    node = get_node(client, uuid)
    assert node["provision_state"] == "clean failed"
    assert "clean_callback_timeout" in node["last_error"]
    assert "agent_secret_token" not in internal(appliance, uuid)


# -- an agent refusing a command's parameters (400) ---------------------------------
@pytest.fixture
def refusing_agent(tmp_path):
    """``start(token)`` -> (callback URL, PEM, runner): the real command API (real
    deploy/standby extensions and validators) over HTTPS on 127.0.0.1:0."""
    servers = []

    def start(token: str):
        cert, key, pem = make_certificate("127.0.0.1", str(tmp_path))
        agent = SimpleNamespace(node_uuid=None, node={}, root_disk=None)
        runner = CommandRunner([DeployExtension(agent), StandbyExtension(agent)])
        httpd = serve_https(create_app(runner, lambda: token), "127.0.0.1", 0, cert, key)
        thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        servers.append((httpd, thread))
        return f"https://127.0.0.1:{httpd.server_port}", pem, runner
    yield start
    for httpd, thread in servers:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)


def test_agent_refusing_the_params_fails_the_deploy_with_its_message(app, refusing_agent):
    """write_image's image_info has a file:// URL the agent cannot download: the agent
    answers 400 in the request; the conductor fails the step at once (no retry, no
    poll) with the agent's message in last_error, and the agent recorded nothing."""
    client, appliance = app
    uuid = waiting_node(client, image="file:///srv/image.raw")
    token = token_of(client, uuid)
    url, pem, runner = refusing_agent(token)
    assert beat(client, uuid, token, url=url, agent_verify_ca=pem).status_code == 202
    node = wait_for(client, uuid, "deploy failed")
    assert "Deploy step write_image failed" in node["last_error"]
    assert "refused the command's parameters (400)" in node["last_error"]
    assert "Invalid parameters for deploy.execute_deploy_step" in node["last_error"]
    assert "image_info.urls[0] must be an http(s) URL" in node["last_error"]
    assert [r.command_name for r in runner.list()] == ["get_deploy_steps"]
    assert node["power_state"] == "power off"
    assert "agent_secret_token" not in internal(appliance, uuid)


class Counted:
    """Counts the Store calls the ramdisk endpoints make (wrapping the real ones)."""

    def __init__(self, monkeypatch, store, names=("get_node", "get_node_by_id",
                                                  "update_node", "reserve", "release")):
        self.calls: list[str] = []
        for name in names:
            real = getattr(store, name)
            monkeypatch.setattr(store, name, self._counting(name, real))

    def _counting(self, name, real):
        def call(*args, **kwargs):
            self.calls.append(name)
            return real(*args, **kwargs)
        return call


def test_a_heartbeat_is_one_read_and_one_write(app, monkeypatch):
    client, appliance = app
    uuid = waiting_node(client)
    token = token_of(client, uuid)
    hold(client, uuid)
    counted = Counted(monkeypatch, appliance.store)
    assert beat(client, uuid, token).status_code == 202
    assert counted.calls == ["get_node", "update_node"]
    assert internal(appliance, uuid)["agent_url"] == "https://127.0.0.1:1"
    assert get_node(client, uuid)["reservation"] is None


def test_a_lookup_mints_its_token_in_one_write(app, monkeypatch):
    client, appliance = app
    uuid = waiting_node(client)
    counted = Counted(monkeypatch, appliance.store)
    answer = lookup(client, node_uuid=uuid).get_json()
    assert answer["config"]["agent_token"] not in (None, "******")
    assert counted.calls == ["get_node", "update_node"]
    assert "agent_token_hash" in internal(appliance, uuid)


def test_a_heartbeat_raced_by_another_write_loses_nothing(app, monkeypatch):
    """The node changed between the heartbeat's read and its write (an operator's
    PATCH here): the one-statement write does not happen; the heartbeat takes the
    lock, reads the node again and records on top of that change."""
    client, appliance = app
    uuid = waiting_node(client)
    token = token_of(client, uuid)
    hold(client, uuid)
    stale = appliance.store.get_node(uuid)
    patched = client.patch(f"/v1/nodes/{uuid}", json=[
        {"op": "add", "path": "/extra/rack", "value": "r7"}], headers=LATEST)
    assert patched.status_code == 200
    real_get = appliance.store.get_node
    monkeypatch.setattr(appliance.store, "get_node",
                        lambda ident: stale if ident == uuid else real_get(ident))
    counted = Counted(monkeypatch, appliance.store, ("reserve", "get_node_by_id"))
    assert beat(client, uuid, token).status_code == 202
    assert counted.calls == ["reserve", "get_node_by_id"]   # the locked way
    node = real_get(uuid)
    assert node.extra == {"rack": "r7"} and node.reservation is None
    assert node.driver_internal_info["agent_url"] == "https://127.0.0.1:1"


def test_two_lookups_racing_mint_one_token(app, monkeypatch):
    """Both read the node before either minted: the second one's write finds the node
    changed, takes the lock, sees the token issued and answers the mask."""
    client, appliance = app
    uuid = waiting_node(client)
    before = appliance.store.get_node(uuid)
    first = lookup(client, node_uuid=uuid).get_json()["config"]["agent_token"]
    real_get = appliance.store.get_node
    monkeypatch.setattr(appliance.store, "get_node",
                        lambda ident: before if ident == uuid else real_get(ident))
    second = lookup(client, node_uuid=uuid).get_json()["config"]["agent_token"]
    assert first not in (None, "******") and second == "******"
    assert real_get(uuid).driver_internal_info["agent_token_hash"] == token_hash(first)
