"""The real openstacksdk against a real metalcast server: no mocks on either side.

Standalone Ironic is reached the way metalsmith and bifrost do it: no Keystone,
``auth_type`` none (or http_basic) and ``baremetal_endpoint_override``. The SDK
then discovers the API from ``GET /`` and ``GET /v1/`` and negotiates its own
microversion (1.109 for nodes, 1.101 for ports).
"""
from __future__ import annotations

import logging

import openstack
import pytest
from openstack import exceptions

from tests.functional.helpers import mac, unique

# The SDK warns about its own internals (RemovedInSDK50/60Warning) on every call.
pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")

WAIT = 30  # seconds; fake-hardware is instant unless driver_info.fake_delay says otherwise


def connect(url: str, **auth) -> openstack.connection.Connection:
    """A connection that ignores clouds.yaml and OS_* variables of the caller."""
    auth_type = "http_basic" if auth else "none"
    return openstack.connect(auth_type=auth_type, auth=auth or None,
                             baremetal_endpoint_override=url,
                             load_yaml_config=False, load_envvars=False)


@pytest.fixture(scope="module")
def conn(server):
    return connect(server.url)


@pytest.fixture(scope="module")
def tight_conn(tight_server):
    return connect(tight_server.url)


def test_discovery_reports_our_version_range(conn):
    data = conn.baremetal.get_endpoint_data()
    assert data.min_microversion == (1, 1)
    assert data.max_microversion == (1, 115)


def test_full_provisioning_lifecycle(conn):
    bm = conn.baremetal
    name = unique("sdk")
    node = bm.create_node(driver="fake-hardware", name=name)
    assert node.provision_state == "enroll" and node.name == name
    port = bm.create_port(node_id=node.id, address=mac())
    assert port.node_id == node.id and port.is_pxe_enabled is True

    node = bm.set_node_provision_state(node, "manage", wait=True, timeout=WAIT)
    assert node.provision_state == "manageable"
    node = bm.set_node_provision_state(node, "provide", wait=True, timeout=WAIT)
    assert node.provision_state == "available"

    node = bm.update_node(node, instance_info={"image_source": "http://images/os.qcow2",
                                               "image_checksum": "0" * 32})
    assert node.instance_info["image_source"] == "http://images/os.qcow2"
    results = bm.validate_node(node)
    assert {"boot", "deploy", "power"} <= set(results)
    assert all(results[i].result for i in ("boot", "deploy", "power"))

    node = bm.set_node_provision_state(node, "active", wait=True, timeout=WAIT)
    assert node.provision_state == "active" and node.last_error is None
    bm.set_node_power_state(node, "power off")
    assert bm.wait_for_node_power_state(node, "power off", timeout=WAIT).power_state \
        == "power off"
    bm.set_node_power_state(node, "power on", wait=True, timeout=WAIT)
    assert bm.get_node(name).power_state == "power on"

    node = bm.set_node_provision_state(node, "deleted", wait=True, timeout=WAIT)
    assert node.provision_state == "available" and not node.instance_info

    assert name in {n.name for n in bm.nodes()}
    detailed = {n.id: n for n in bm.nodes(details=True)}
    assert detailed[node.id].driver == "fake-hardware"
    assert [p.id for p in bm.ports(node_id=node.id)] == [port.id]

    bm.delete_port(port)
    assert list(bm.ports(node_id=node.id)) == []
    bm.delete_node(node)
    with pytest.raises(exceptions.NotFoundException):
        bm.get_node(node.id)
    with pytest.raises(exceptions.NotFoundException):
        bm.find_node(name, ignore_missing=False)


def test_legacy_create_as_available_is_deployable(conn):
    """provision_state=available makes the SDK create at API 1.10 (pre-enroll)."""
    bm = conn.baremetal
    node = bm.create_node(driver="fake-hardware", name=unique("legacy"),
                          provision_state="available")
    assert node.provision_state == "available"
    node = bm.set_node_provision_state(node, "active", wait=True, timeout=WAIT)
    assert node.provision_state == "active"
    bm.set_node_provision_state(node, "deleted", wait=True, timeout=WAIT)
    bm.delete_node(node)


def test_validate_reports_a_broken_interface(conn):
    bm = conn.baremetal
    node = bm.create_node(driver="fake-hardware", name=unique("invalid"),
                          driver_info={"fake_delay": "soon"})
    results = bm.validate_node(node, required=())
    assert results["deploy"].result is False
    assert "fake_delay" in results["deploy"].reason
    with pytest.raises(exceptions.ValidationException, match="deploy"):
        bm.validate_node(node)
    bm.delete_node(node)


def test_listing_follows_next_links(tight_conn):
    """The tight server pages at 2: every listing below needs several pages."""
    bm = tight_conn.baremetal
    prefix = unique("page")
    created = {bm.create_node(driver="fake-hardware", name=f"{prefix}-{i}").id
               for i in range(5)}
    for query in ({}, {"limit": 2}, {"details": True}, {"details": True, "limit": 2}):
        nodes = [n for n in bm.nodes(**query) if (n.name or "").startswith(prefix)]
        assert sorted(n.id for n in nodes) == sorted(created), query
        if query.get("details"):
            # Every page must stay on /v1/nodes/detail, not fall back to the short list.
            assert {n.driver for n in nodes} == {"fake-hardware"}, query
    node_id = sorted(created)[0]
    ports = {bm.create_port(node_id=node_id, address=mac()).id for _ in range(3)}
    assert {p.id for p in bm.ports(node_id=node_id)} == ports
    detailed = list(bm.ports(node_id=node_id, details=True))
    assert sorted(p.id for p in detailed) == sorted(ports)
    assert {p.node_id for p in detailed} == {node_id}  # node_uuid is a detail field
    for node_id in created:
        bm.delete_node(node_id)


def test_http_basic_auth(basic_server):
    good = connect(basic_server.url, username=basic_server.username,
                   password=basic_server.password)
    node = good.baremetal.create_node(driver="fake-hardware", name=unique("basic"))
    assert good.baremetal.get_node(node.id).name == node.name
    good.baremetal.delete_node(node)

    bad = connect(basic_server.url, username=basic_server.username, password="wrong")
    with pytest.raises(exceptions.HttpException) as failure:
        list(bad.baremetal.nodes())
    assert failure.value.status_code == 401
    assert "Invalid user name or password" in str(failure.value)
    with pytest.raises(exceptions.HttpException) as failure:
        list(connect(basic_server.url).baremetal.nodes())
    assert failure.value.status_code == 401


def _retries(caplog, code: int) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if f"Retriable status code {code}" in r.getMessage()]


def test_node_locked_409_is_retried(conn, caplog):
    """A PATCH while cleaning holds the lock gets 409; the SDK retries until it lands."""
    caplog.set_level(logging.WARNING)
    bm = conn.baremetal
    node = bm.create_node(driver="fake-hardware", name=unique("locked"),
                          driver_info={"fake_delay": 1.5})
    bm.set_node_provision_state(node, "manage", wait=True, timeout=WAIT)
    bm.set_node_provision_state(node, "provide")  # cleaning takes 1.5 s under the lock
    updated = bm.update_node(node, extra={"rack": "r1"})
    assert updated.extra == {"rack": "r1"}
    assert updated.provision_state == "available"  # it landed after cleaning ended
    assert _retries(caplog, 409)
    bm.delete_node(node)


def test_concurrent_action_limit_503_is_retried(tight_conn, caplog):
    """Only one cleaning at a time on the tight server: the second provide gets 503."""
    caplog.set_level(logging.WARNING)
    bm = tight_conn.baremetal
    first, second = (bm.create_node(driver="fake-hardware", name=unique("busy"),
                                    driver_info={"fake_delay": 1.5}) for _ in range(2))
    for node in (first, second):
        bm.set_node_provision_state(node, "manage", wait=True, timeout=WAIT)
    bm.set_node_provision_state(first, "provide")
    second = bm.set_node_provision_state(second, "provide", wait=True, timeout=WAIT)
    assert second.provision_state == "available"
    assert _retries(caplog, 503)
    bm.wait_for_nodes_provision_state([first], "available", timeout=WAIT)
    for node in (first, second):
        bm.delete_node(node)
