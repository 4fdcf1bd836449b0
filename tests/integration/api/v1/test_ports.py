"""Port updates and deletions through the API (Ironic's update_port/destroy_port rules):
node locks, state rules, and the per-MAC boot files and dnsmasq host entries that
follow a port's MAC. Real SQLite store, fake power, the real ipxe/pxe boot interfaces
writing into the appliance's boot roots and a real hostsdir DHCP provider."""
from __future__ import annotations

import json

import pytest

from conductor.engine.task import Task
from conductor.netboot import dhcp

LATEST = {"X-OpenStack-Ironic-API-Version": "latest"}
MAC_A, MAC_B, MAC_C = "52:54:00:70:00:0a", "52:54:00:70:00:0b", "52:54:00:70:00:0c"


@pytest.fixture
def app(make_app):
    """(client, appliance) whose pxe/ipxe nodes render configs and dnsmasq host files."""
    return make_app({"pxe.deploy_kernel": "http://10.0.0.1/k",
                     "pxe.deploy_ramdisk": "http://10.0.0.1/r", "dhcp.mode": "hostsdir",
                     "conductor.sync_power_state_interval": 0})


def enrol(app, macs, boot="ipxe", state="clean wait", live=True, **values):
    """A node with ports for ``macs`` in ``state``; ``live``: its ramdisk config written
    (as the clean/deploy step that moved it to ``state`` did)."""
    client, appliance = app
    node = client.post("/v1/nodes", json={"driver": "fake-hardware", "boot_interface": boot},
                       headers=LATEST).get_json()
    ports = [client.post("/v1/ports", json={"address": m, "node_uuid": node["uuid"]},
                         headers=LATEST).get_json() for m in macs]
    store = appliance.store
    stored = store.get_node(node["uuid"])
    store.update_node(stored.id, dict(provision_state=state, **values))
    if live:
        task = Task(store, store.get_node_by_id(stored.id), "writer", appliance.drivers)
        task.boot.prepare_ramdisk(task)
    return node["uuid"], [p["uuid"] for p in ports]


def script(app, mac):
    return app[1].settings.data_path / "httpboot" / "ipxe" / f"{mac.replace(':', '-')}.ipxe"


def dhcp_entries(app) -> dict:
    return dhcp.HostsDirDhcp(dhcp.hostsdir(app[1].settings)).entries()


def served(app, mac) -> bool:
    """dnsmasq would hand ``mac`` a metalcast boot (its host line carries our tag)."""
    return f"set:{dhcp.TAG}" in dhcp_entries(app).get(mac, "").split(",")[1:]


def patch(app, port, *ops):
    return app[0].patch(f"/v1/ports/{port}", json=list(ops), headers=LATEST)


def replace(path, value):
    return {"op": "replace", "path": path, "value": value}


def node(app, uuid):
    return app[0].get(f"/v1/nodes/{uuid}", headers=LATEST).get_json()


def port(app, uuid):
    return app[0].get(f"/v1/ports/{uuid}", headers=LATEST).get_json()


def message(response) -> str:
    return json.loads(response.get_json()["error_message"])["faultstring"]


def test_address_change_moves_a_live_boot_config_to_the_new_mac(app):
    uuid, (pa, _) = enrol(app, [MAC_A, MAC_B])
    assert script(app, MAC_A).exists() and served(app, MAC_A)
    response = patch(app, pa, replace("/address", MAC_C))
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["address"] == MAC_C
    assert not script(app, MAC_A).exists() and not served(app, MAC_A)
    assert f"BOOTIF=01-{MAC_C.replace(':', '-')}" in script(app, MAC_C).read_text()
    assert served(app, MAC_C) and served(app, MAC_B) and script(app, MAC_B).exists()
    assert node(app, uuid)["reservation"] is None  # the lock was taken and released


def test_delete_removes_only_that_mac(app):
    uuid, (pa, _) = enrol(app, [MAC_A, MAC_B])
    assert app[0].delete(f"/v1/ports/{pa}", headers=LATEST).status_code == 204
    assert not script(app, MAC_A).exists() and not served(app, MAC_A)
    assert script(app, MAC_B).exists() and served(app, MAC_B)
    assert node(app, uuid)["reservation"] is None


def test_deleting_the_last_port_leaves_nothing_to_boot(app):
    _, (pa,) = enrol(app, [MAC_A], boot="pxe")
    cfg = app[1].settings.data_path / "tftpboot" / "pxelinux.cfg" / "01-52-54-00-70-00-0a"
    assert cfg.exists()
    assert app[0].delete(f"/v1/ports/{pa}", headers=LATEST).status_code == 204
    assert not cfg.exists() and not served(app, MAC_A)
    assert MAC_A in dhcp_entries(app)  # rewritten as "released", as dnsmasq needs


def test_move_to_another_node(app):
    old, (pa, _) = enrol(app, [MAC_A, MAC_B])
    new, _ = enrol(app, [MAC_C])  # live too: gets the moved MAC in its config
    response = patch(app, pa, replace("/node_uuid", new))
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["node_uuid"] == new
    text = script(app, MAC_A).read_text()
    assert new in text and old not in text  # now boots the new node's ramdisk
    assert old in script(app, MAC_B).read_text()
    assert dhcp_entries(app)[MAC_A].startswith(MAC_A) and served(app, MAC_A)
    assert node(app, old)["reservation"] is None and node(app, new)["reservation"] is None


def test_move_to_a_node_that_is_not_booting(app):
    _, (pa,) = enrol(app, [MAC_A])
    new, _ = enrol(app, [MAC_C], state="manageable", live=False)
    assert patch(app, pa, replace("/node_uuid", new)).status_code == 200
    assert not script(app, MAC_A).exists() and not served(app, MAC_A)


def test_address_change_of_a_node_not_booting_writes_nothing(app):
    _, (pa,) = enrol(app, [MAC_A], state="available", live=False)
    stale = script(app, MAC_A)  # e.g. left by a version without this fix
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_text("#!ipxe\n")
    assert patch(app, pa, replace("/address", MAC_B)).status_code == 200
    assert not stale.exists() and not script(app, MAC_B).exists()


def test_pxe_enabled_is_a_connectivity_attribute(app):
    uuid, (pa, _) = enrol(app, [MAC_A, MAC_B])
    response = patch(app, pa, replace("/pxe_enabled", False))
    assert response.status_code == 409
    assert "connectivity attributes (pxe_enabled)" in message(response)
    assert "clean wait" in message(response) and "maintenance" in message(response)
    assert port(app, pa)["pxe_enabled"] is True and script(app, MAC_A).exists()
    app[0].put(f"/v1/nodes/{uuid}/maintenance", json={"reason": "nic swap"}, headers=LATEST)
    assert patch(app, pa, replace("/pxe_enabled", False)).status_code == 200
    assert not script(app, MAC_A).exists() and not served(app, MAC_A)
    assert script(app, MAC_B).exists() and served(app, MAC_B)


def test_connectivity_attributes_change_freely_in_manageable(app):
    _, (pa,) = enrol(app, [MAC_A], state="manageable", live=False)
    response = patch(app, pa, replace("/pxe_enabled", False),
                     replace("/physical_network", "physnet1"))
    assert response.status_code == 200
    assert (response.get_json()["pxe_enabled"], response.get_json()["physical_network"]) \
        == (False, "physnet1")


@pytest.mark.parametrize("values", [{"provision_state": "active"},
                                    {"provision_state": "available",
                                     "instance_uuid": "5d2a2a8e-6d0e-4b6a-9d0c-3c1f8a7b9e01"}])
def test_address_of_an_active_node_needs_maintenance(app, values):
    state = values.pop("provision_state")
    uuid, (pa,) = enrol(app, [MAC_A], state=state, live=False, **values)
    response = patch(app, pa, replace("/address", MAC_B))
    assert response.status_code == 409
    text = message(response)
    assert "is active or has an instance UUID assigned" in text
    assert f"openstack baremetal node maintenance set {uuid}" in text
    assert port(app, pa)["address"] == MAC_A
    other, _ = enrol(app, [MAC_C], state="manageable", live=False)
    assert patch(app, pa, replace("/node_uuid", other)).status_code == 409  # moving too
    assert app[0].put(f"/v1/nodes/{uuid}/maintenance", json={},
                      headers=LATEST).status_code == 202
    assert patch(app, pa, replace("/address", MAC_B)).status_code == 200
    assert port(app, pa)["address"] == MAC_B


def test_extra_changes_on_an_active_node(app):
    _, (pa,) = enrol(app, [MAC_A], state="active", live=False)
    response = patch(app, pa, {"op": "add", "path": "/extra/rack", "value": "r1"})
    assert response.status_code == 200 and response.get_json()["extra"] == {"rack": "r1"}
    # The same MAC in other letters is no address change, so it is no 409 either.
    assert patch(app, pa, replace("/address", MAC_A.upper())).status_code == 200


def test_no_update_while_inspecting(app):
    _, (pa,) = enrol(app, [MAC_A], state="inspecting", live=False)
    response = patch(app, pa, {"op": "add", "path": "/extra/a", "value": 1})
    assert response.status_code == 409 and "inspecting" in message(response)


def test_locked_node_is_409_and_nothing_changes(app):
    uuid, (pa,) = enrol(app, [MAC_A])
    store = app[1].store
    store.reserve(store.get_node(uuid), "deploy-worker")
    response = patch(app, pa, replace("/address", MAC_B))
    assert response.status_code == 409
    assert "locked by host deploy-worker" in message(response)
    assert app[0].delete(f"/v1/ports/{pa}", headers=LATEST).status_code == 409
    assert port(app, pa)["address"] == MAC_A
    assert script(app, MAC_A).exists() and served(app, MAC_A)
    assert node(app, uuid)["reservation"] == "deploy-worker"  # not ours to release


def test_move_to_a_locked_node_releases_the_first_lock(app):
    old, (pa,) = enrol(app, [MAC_A])
    new, _ = enrol(app, [MAC_C])
    store = app[1].store
    store.reserve(store.get_node(new), "deploy-worker")
    assert patch(app, pa, replace("/node_uuid", new)).status_code == 409
    assert node(app, old)["reservation"] is None
    assert port(app, pa)["node_uuid"] == old and script(app, MAC_A).exists()


@pytest.mark.parametrize("value", ["52:54:00:70:00", "not-a-mac", "52:54:00:70:00:0g", 7])
def test_bad_mac_is_400_and_nothing_changes(app, value):
    uuid, (pa,) = enrol(app, [MAC_A])
    before = script(app, MAC_A).read_text()
    response = patch(app, pa, replace("/address", value))
    assert response.status_code == 400
    assert "MAC address" in message(response)
    assert port(app, pa)["address"] == MAC_A
    assert script(app, MAC_A).read_text() == before and served(app, MAC_A)
    assert node(app, uuid)["reservation"] is None


def test_duplicate_mac_is_409_and_nothing_changes(app):
    uuid, (pa, _) = enrol(app, [MAC_A, MAC_B])
    response = patch(app, pa, replace("/address", MAC_B))
    assert response.status_code == 409 and MAC_B in message(response)
    assert port(app, pa)["address"] == MAC_A
    assert script(app, MAC_A).exists() and served(app, MAC_A)
    assert node(app, uuid)["reservation"] is None


def test_port_with_a_bound_vif_is_not_deleted_unless_in_maintenance(app):
    uuid, (pa,) = enrol(app, [MAC_A], state="active", live=False)
    store = app[1].store
    store.update_port(store.get_port(pa).id,
                      {"internal_info": {"tenant_vif_port_id": "vif-1234"}})
    response = app[0].delete(f"/v1/ports/{pa}", headers=LATEST)
    assert response.status_code == 409
    assert "bound to VIF vif-1234 for tenant use" in message(response)
    assert port(app, pa)["address"] == MAC_A
    app[0].put(f"/v1/nodes/{uuid}/maintenance", json={}, headers=LATEST)
    assert app[0].delete(f"/v1/ports/{pa}", headers=LATEST).status_code == 204


def test_fake_boot_nodes_just_change(app):
    client, _ = app
    body = client.post("/v1/nodes", json={"driver": "fake-hardware"}, headers=LATEST).get_json()
    pa = client.post("/v1/ports", json={"address": MAC_A, "node_uuid": body["uuid"]},
                     headers=LATEST).get_json()["uuid"]
    assert patch(app, pa, replace("/address", MAC_B)).status_code == 200
    assert client.delete(f"/v1/ports/{pa}", headers=LATEST).status_code == 204
