"""The real ``baremetal`` CLI (python-ironicclient) against a real metalcast server.

Every invocation is a fresh process (~0.7 s), so the lifecycle runs as one test.
Its ``--wait`` polls right after the 202 and then every 10 s for provide, deploy
and undeploy (2 s for manage): when the first poll beats the worker, a step
costs 10 s, so the lifecycle takes 15-45 s. That is the client's pace, not ours.
ironicclient sends its newest microversion (1.115) without discovery; when a
server refuses it with 406 it reads the min/max headers and retries, which the
last tests check over plain HTTP.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.functional.helpers import mac, unique

BAREMETAL = str(Path(sys.executable).parent / "baremetal")
VERSION = "X-OpenStack-Ironic-API-Version"
MIN_VERSION = "X-OpenStack-Ironic-API-Minimum-Version"
MAX_VERSION = "X-OpenStack-Ironic-API-Maximum-Version"


def baremetal(server, *args: str, auth: tuple[str, str] | None = None,
              check: bool = True) -> subprocess.CompletedProcess:
    """Run ``baremetal ARGS`` against ``server``; OS_* variables of the caller are dropped."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    cmd = [BAREMETAL, "--os-endpoint", server.url]
    if auth:
        cmd += ["--os-auth-type", "http_basic", f"--os-username={auth[0]}",
                f"--os-password={auth[1]}"]
    else:
        cmd += ["--os-auth-type", "none"]
    result = subprocess.run(cmd + list(args), capture_output=True, text=True, env=env,
                            timeout=120)
    if check:
        assert result.returncode == 0, (
            f"baremetal {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
    return result


def as_json(server, *args: str, **kwargs):
    return json.loads(baremetal(server, *args, "-f", "json", **kwargs).stdout)


def test_full_lifecycle(server):
    name = unique("cli")
    node = as_json(server, "node", "create", "--driver", "fake-hardware", "--name", name)
    uuid = node["uuid"]
    assert node["provision_state"] == "enroll"
    address = mac()
    port = as_json(server, "port", "create", address, "--node", uuid)
    assert port["node_uuid"] == uuid
    assert [p["address"] for p in as_json(server, "port", "list", "--node", uuid)] \
        == [address]

    baremetal(server, "node", "manage", "--wait", "30", uuid)
    baremetal(server, "node", "provide", "--wait", "30", name)
    baremetal(server, "node", "set", name, "--instance-info",
              "image_source=http://images/os.qcow2", "--instance-info",
              "image_checksum=" + "0" * 32)
    checks = {r["Interface"]: r["Result"] for r in as_json(server, "node", "validate", name)}
    assert checks["deploy"] and checks["power"] and checks["boot"]
    baremetal(server, "node", "deploy", "--wait", "30", name)

    baremetal(server, "node", "power", "off", name)
    shown = as_json(server, "node", "show", name)
    assert (shown["provision_state"], shown["power_state"]) == ("active", "power off")
    assert shown["instance_info"]["image_source"] == "http://images/os.qcow2"
    baremetal(server, "node", "power", "on", name)

    listed = {n["name"]: n for n in as_json(server, "node", "list")}
    assert listed[name]["power_state"] == "power on"
    assert listed[name]["provision_state"] == "active"
    long = {n["name"]: n for n in as_json(server, "node", "list", "--long")}
    assert long[name]["driver"] == "fake-hardware"

    baremetal(server, "node", "undeploy", "--wait", "30", name)

    # Ports are created with {} JSON fields, so the CLI's PATCH /extra/KEY applies.
    baremetal(server, "port", "set", port["uuid"], "--extra", "rack=r1")
    assert as_json(server, "port", "show", port["uuid"])["extra"] == {"rack": "r1"}
    baremetal(server, "port", "delete", port["uuid"])
    baremetal(server, "node", "delete", name)
    gone = baremetal(server, "node", "show", uuid, check=False)
    assert gone.returncode != 0 and "could not be found" in gone.stderr


def test_port_create_wants_a_node_uuid(server):
    """As with Ironic, a node name is a 400 for ``port create --node``."""
    name = unique("cli-name")
    as_json(server, "node", "create", "--driver", "fake-hardware", "--name", name)
    result = baremetal(server, "port", "create", mac(), "--node", name, check=False)
    assert result.returncode != 0 and "HTTP 400" in result.stderr
    baremetal(server, "node", "delete", name)


def test_listing_follows_next_links(tight_server):
    """The tight server pages at 2; ``--limit 0`` makes ironicclient follow ``next``."""
    prefix = unique("cli-page")
    for i in range(3):
        response = requests.post(f"{tight_server.url}/v1/nodes", timeout=10,
                                 json={"driver": "fake-hardware", "name": f"{prefix}-{i}"},
                                 headers={VERSION: "1.115"})
        assert response.status_code == 201, response.text
    names = {f"{prefix}-{i}" for i in range(3)}
    short = as_json(tight_server, "node", "list", "--limit", "0")
    assert names <= {n["name"] for n in short}
    long = [n for n in as_json(tight_server, "node", "list", "--long", "--limit", "0")
            if n["name"] in names]
    assert sorted(n["name"] for n in long) == sorted(names)
    assert {n["driver"] for n in long} == {"fake-hardware"}


def test_http_basic_auth(basic_server):
    creds = (basic_server.username, basic_server.password)
    name = unique("cli-basic")
    as_json(basic_server, "node", "create", "--driver", "fake-hardware", "--name", name,
            auth=creds)
    assert name in {n["name"] for n in as_json(basic_server, "node", "list", auth=creds)}
    denied = baremetal(basic_server, "node", "list", auth=(creds[0], "wrong"), check=False)
    assert denied.returncode != 0 and "HTTP 401" in denied.stderr
    anonymous = baremetal(basic_server, "node", "list", check=False)
    assert anonymous.returncode != 0 and "HTTP 401" in anonymous.stderr


def test_cli_at_an_older_microversion(server):
    """What the CLI sends after negotiating down: fields newer than 1.80 stay hidden."""
    name = unique("cli-old")
    node = as_json(server, "--os-baremetal-api-version", "1.80", "node", "create",
                   "--driver", "fake-hardware", "--name", name)
    assert node["provision_state"] == "enroll"
    assert "boot_mode" in node and "network_data" in node  # 1.75 and 1.66
    assert "shard" not in node and "firmware_interface" not in node  # 1.82 and 1.86
    baremetal(server, "node", "delete", name)


@pytest.fixture
def http(server):
    session = requests.Session()
    session.headers.update({"X-Auth-Token": "notused", "User-Agent": "python-ironicclient"})
    yield session
    session.close()


def test_version_negotiation_406_dance(server, http):
    """ironicclient's dance: 406 with min/max, ``GET /v1``, retry at the maximum."""
    name = unique("dance")
    refused = http.post(f"{server.url}/v1/nodes", headers={VERSION: "1.116"},
                        json={"driver": "fake-hardware", "name": name})
    assert refused.status_code == 406
    assert (refused.headers[MIN_VERSION], refused.headers[MAX_VERSION]) == ("1.1", "1.115")
    error = json.loads(refused.json()["error_message"])  # a JSON string, as in Ironic
    assert error["code"] == 406 and error["title"] == "Not Acceptable"
    assert "1.116" in error["description"]

    root = http.get(f"{server.url}/v1", headers={VERSION: "1.116"})
    assert root.status_code == 200
    maximum = root.headers[MAX_VERSION]
    assert root.headers[MIN_VERSION] == "1.1"
    assert root.json()["version"]["version"] == maximum

    created = http.post(f"{server.url}/v1/nodes", headers={VERSION: maximum},
                        json={"driver": "fake-hardware", "name": name})
    assert created.status_code == 201
    assert created.headers[VERSION] == maximum
    assert created.headers["Location"].endswith(f"/v1/nodes/{created.json()['uuid']}")
    assert http.delete(f"{server.url}/v1/nodes/{name}",
                       headers={VERSION: maximum}).status_code == 204


@pytest.mark.parametrize("headers, expected", [
    ({}, "1.1"),
    ({VERSION: "latest"}, "1.115"),
    ({"OpenStack-API-Version": "baremetal 1.80"}, "1.80"),
])
def test_version_in_effect_is_echoed(server, http, headers, expected):
    response = http.get(f"{server.url}/v1/nodes/no-such-node", headers=headers)
    assert response.status_code == 404  # errors carry the headers too
    assert response.headers[VERSION] == expected
    assert (response.headers[MIN_VERSION], response.headers[MAX_VERSION]) == ("1.1", "1.115")
    assert "could not be found" in json.loads(response.json()["error_message"])["faultstring"]
