"""/metrics and request IDs through the API of an in-process appliance (real SQLite
store, fake hardware): the families move with the work, nothing secret is rendered,
hostile values cannot break the format, every answer carries x-openstack-request-id
and the log lines a request causes name it."""
from __future__ import annotations

import datetime
import logging
import re
import urllib.request

import bcrypt
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from api import create_app, create_orchestration_app, create_patching_app
from conductor import config, errors, request_ids
from conductor.appliance import Appliance
from conductor.db.schema import update_instances
from conductor.drivers.fake import FakePower
from conductor.engine.workers import check_wait_timeouts
from tests.integration.api.v1 import test_ramdisk as ramdisk
from tests.integration.api.v1.test_api import LATEST, act, create, wait_state
from tests.integration.conductor.netboot.test_tftp import Client, ack, rrq
from tests.waiting import wait_until

REQUEST_ID = re.compile(r"^req-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-"
                        r"[0-9a-f]{12}$")


def scrape(client, **kwargs) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics: (name, sorted labels) -> value."""
    response = client.get("/metrics", **kwargs)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.get_data(as_text=True))
            for s in family.samples}


def total(samples, name: str, **labels) -> float:
    return sum(value for (sample, found), value in samples.items() if sample == name
               and all(dict(found).get(k) == v for k, v in labels.items()))


def available(client) -> dict:
    node = create(client)
    act(client, node["uuid"], "manage")
    wait_state(client, node["uuid"], "manageable")
    act(client, node["uuid"], "provide")
    wait_state(client, node["uuid"], "available")
    return node


def test_deploy_moves_the_state_gauge_and_the_duration_histogram(make_app):
    client, _ = make_app()
    node = available(client)
    before = scrape(client)
    assert total(before, "metalcast_nodes", provision_state="available") == 1
    assert total(before, "metalcast_provision_duration_seconds_count",
                 operation="clean", result="success") == 1
    assert total(before, "metalcast_provision_duration_seconds_count",
                 operation="deploy") == 0
    act(client, node["uuid"], "active")
    wait_state(client, node["uuid"], "active")
    after = scrape(client)
    assert total(after, "metalcast_nodes", provision_state="available") == 0
    assert total(after, "metalcast_nodes", provision_state="active",
                 power_state="power on", maintenance="false") == 1
    assert total(after, "metalcast_provision_duration_seconds_count",
                 operation="deploy", result="success") == 1
    act(client, node["uuid"], "rebuild")
    wait_state(client, node["uuid"], "active")
    assert total(scrape(client), "metalcast_provision_duration_seconds_count",
                 operation="rebuild", result="success") == 1


def test_a_failed_cleaning_is_observed_as_a_failure(make_app):
    client, _ = make_app()
    node = create(client)
    act(client, node["uuid"], "manage")
    wait_state(client, node["uuid"], "manageable")
    client.patch(f"/v1/nodes/{node['uuid']}", headers=LATEST,
                 json=[{"op": "add", "path": "/driver_info/fake_delay", "value": "soon"}])
    act(client, node["uuid"], "provide")
    wait_state(client, node["uuid"], "clean failed")
    samples = scrape(client)
    assert total(samples, "metalcast_provision_duration_seconds_count",
                 operation="clean", result="failure") == 1
    assert total(samples, "metalcast_nodes", provision_state="clean failed") == 1


class BrokenBmc(FakePower):
    def get_power_state(self, task):
        raise errors.DriverError(reason="BMC 10.0.0.1 did not answer")


def test_power_sync_sweeps_and_bmc_errors_by_driver(tmp_path):
    settings = config.from_options({"data_dir": str(tmp_path / "bmc"), "pxe.enabled": False,
                                    "conductor.host": "test-conductor"})
    appliance = Appliance(settings, driver_overrides={("power", "fake"): BrokenBmc})
    try:
        client = create_app(appliance.service).test_client()
        # Enrolled at API 1.1: available at once, never verified (that reads power).
        for _ in range(2):
            assert client.post("/v1/nodes", json={"driver": "fake-hardware"}).status_code == 201
        appliance.workers.power_sync.sweep()
        samples = scrape(client)
        assert total(samples, "metalcast_bmc_errors_total", driver="fake-hardware") == 2
        assert total(samples, "metalcast_power_sync_duration_seconds_count") == 1
    finally:
        appliance.stop()


def test_callback_timeouts_and_refused_heartbeats(make_app):
    client, appliance = make_app()
    node = create(client)
    stale = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1)
    row = appliance.store.get_node(node["uuid"])
    appliance.store.update_node(row.id, {"provision_state": "wait call-back",
                                         "target_provision_state": "active",
                                         "provision_updated_at": stale})
    assert check_wait_timeouts(appliance.store, appliance.settings, appliance.drivers,
                               on_timeout=appliance.workers._timed_out) == 1
    refused = client.post(f"/v1/heartbeat/{node['uuid']}", headers=dict(
        LATEST, **{"X-Argus-Agent-Token": "forged"}), json={
            "callback_url": "http://127.0.0.1:9999", "agent_token": "forged",
            "agent_version": "9.0.0"})
    assert refused.status_code >= 400
    samples = scrape(client)
    assert total(samples, "metalcast_agent_callback_timeouts_total",
                 state="wait call-back") == 1
    assert total(samples, "metalcast_agent_heartbeats_total", result="refused") == 1
    assert total(samples, "metalcast_nodes", provision_state="deploy failed") == 1


def test_boot_transfers_are_counted_from_the_tftp_workers_and_http(make_app, tmp_path):
    client, appliance = make_app({"pxe.enabled": True, "pxe.tftp_port": 0,
                                  "pxe.http_port": 0, "api.host": "127.0.0.1",
                                  "pxe.tftp_root": str(tmp_path / "tftp"),
                                  "pxe.http_root": str(tmp_path / "http")})
    (tmp_path / "tftp" / "f").write_bytes(bytes(range(256)) * 4)   # 2 blocks + an empty 3rd
    (tmp_path / "http" / "kernel").write_bytes(b"k" * 5000)
    tftp = Client(appliance.netboot.tftp.port)
    assert tftp.request(rrq("f"))[:4] == b"\0\3\0\1"
    for block in (1, 2):
        tftp.send(ack(block))
        tftp.receive()
    tftp.send(ack(3))
    with urllib.request.urlopen(f"{appliance.netboot.http.url}/kernel") as answer:
        assert len(answer.read()) == 5000

    def counted():
        samples = scrape(client)
        return samples if all(total(samples, "metalcast_boot_sessions_total", protocol=p)
                              for p in ("tftp", "http")) else None
    # Counted as each ends: the TFTP worker reports to the server thread, the HTTP loop
    # after its last sendfile (the client may have read it all a moment before).
    samples = wait_until(counted, 10, 0.05, "both transfers to be counted")
    assert total(samples, "metalcast_boot_bytes_total", protocol="tftp") == 1024
    assert total(samples, "metalcast_boot_sessions_total", protocol="tftp",
                 result="complete") == 1
    assert total(samples, "metalcast_boot_bytes_total", protocol="http") == 5000
    assert total(samples, "metalcast_boot_sessions_total", protocol="http",
                 result="complete") == 1
    assert ("metalcast_boot_sessions_open", (("protocol", "tftp"),)) in samples


# -- what /metrics may show -------------------------------------------------------------
def test_metrics_need_credentials_when_the_api_does(make_app, tmp_path):
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text("prom:" + bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode() + "\n")
    client, _ = make_app({"api.auth_strategy": "http_basic",
                          "api.htpasswd_file": str(htpasswd)})
    refused = client.get("/metrics")
    assert refused.status_code == 401 and "metalcast_nodes" not in refused.get_data(
        as_text=True)
    assert client.get("/metrics", auth=("prom", "wrong")).status_code == 401
    allowed = client.get("/metrics", auth=("prom", "pw"))
    assert allowed.status_code == 200
    assert "# TYPE metalcast_nodes gauge" in allowed.get_data(as_text=True)


def test_no_secret_is_rendered(make_app):
    client, appliance = make_app()
    node = create(client, driver_info={"ipmi_password": "bmc-Pa55word!",
                                       "ipmi_username": "root"})
    row = appliance.store.get_node(node["uuid"])
    appliance.store.update_node(row.id, {"driver_internal_info": {
        "agent_secret_token": "agent-T0ken-xyz"}, "fault": "power failure",
        "maintenance": True})
    text = client.get("/metrics").get_data(as_text=True)
    for secret in ("bmc-Pa55word!", "agent-T0ken-xyz", row.driver_info["ipmi_password"]):
        assert secret not in text
    assert 'fault="power failure"' in text


def test_hostile_label_values_stay_in_their_label_and_are_capped(make_app):
    client, appliance = make_app()
    now = datetime.datetime.now(datetime.UTC)
    hostile = 'v1"} metalcast_nodes 1e9\n# x'
    rows = [dict(machineid=f"m{i}", appid="app", group_name="stable", version=f"9.{i}",
                 status="complete", created_at=now) for i in range(300)]
    rows.append(dict(machineid="evil", appid="app", group_name="stable", version=hostile,
                     status="complete", created_at=now))
    with appliance.engine.begin() as conn:
        conn.execute(sa.insert(update_instances), rows)
    samples = scrape(client)
    series = [dict(labels) for (name, labels) in samples
              if name == "metalcast_update_instances"]
    assert len(series) <= 201
    assert total(samples, "metalcast_update_instances") == 301
    assert total(samples, "metalcast_nodes") == 0   # the hostile value made no sample
    assert any(s["version"] == "other" for s in series)


# -- request IDs --------------------------------------------------------------------------
def test_every_answer_of_every_app_carries_a_fresh_request_id(make_app):
    client, appliance = make_app()
    seen = set()
    for response in (client.get("/"), client.get("/v1/nodes", headers=LATEST),
                     client.get("/v1/nodes/nope", headers=LATEST),          # 404
                     client.get("/v1/nodes", headers={
                         "X-OpenStack-Ironic-API-Version": "9.99"}),        # 406
                     client.post("/v1/nodes", data=b"x" * (2 << 20),        # over the cap
                                 content_type="application/json", headers=LATEST),
                     client.get("/metrics"),
                     create_patching_app(appliance.service).test_client().get("/v1/query"),
                     create_orchestration_app(appliance.service).test_client().get(
                         "/api/orchestration/sw-patch/strategy")):
        rid = response.headers.get("x-openstack-request-id")
        assert rid is not None and REQUEST_ID.match(rid), (response.status, rid)
        seen.add(rid)
    assert len(seen) == 8


def test_forged_request_ids_are_not_echoed(make_app):
    client, _ = make_app()
    forged = "req-00000000-0000-4000-8000-000000000000\r\nX-Evil: 1"
    response = client.get("/v1/nodes", headers=dict(LATEST, **{
        "x-openstack-request-id": "req-00000000-0000-4000-8000-000000000000"}))
    assert response.headers.getlist("x-openstack-request-id") != [
        "req-00000000-0000-4000-8000-000000000000"]
    assert len(response.headers.getlist("x-openstack-request-id")) == 1
    assert forged not in str(response.headers)


def test_log_lines_of_a_request_and_of_the_work_it_started_carry_its_id(make_app, caplog):
    client, _ = make_app()
    caplog.handler.addFilter(request_ids.RequestIdFilter())   # as `metalcast serve` does
    caplog.set_level(logging.INFO)
    node = available(client)
    response = act(client, node["uuid"], "active")
    rid = response.headers["x-openstack-request-id"]
    wait_state(client, node["uuid"], "active")
    mine = [r for r in caplog.records if r.request_id == rid]
    assert any(r.threadName.startswith("metalcast-worker") and "to active" in r.getMessage()
               for r in mine), [(r.threadName, r.getMessage()) for r in mine]
    assert any("active requested" in r.getMessage() and node["uuid"] in r.getMessage()
               for r in mine)
    periodic = [r for r in caplog.records if r.threadName == "metalcast-periodic"]
    assert all(r.request_id == "-" for r in periodic)


def test_an_accepted_heartbeat_is_counted(make_app):
    client, _ = make_app({"agent.command_timeout": 2.0, "agent.max_command_attempts": 1})
    uuid = ramdisk.waiting_node(client)
    ramdisk.hold(client, uuid)          # recorded, drives nothing: no agent to reach
    token = ramdisk.token_of(client, uuid)
    assert ramdisk.beat(client, uuid, token).status_code == 202
    assert ramdisk.beat(client, uuid, "forged").status_code >= 400
    samples = scrape(client)
    assert total(samples, "metalcast_agent_heartbeats_total", result="accepted") == 1
    assert total(samples, "metalcast_agent_heartbeats_total", result="refused") == 1


def test_the_metrics_route_refuses_what_it_does_not_serve(make_app):
    client, _ = make_app()
    for method in (client.post, client.put, client.delete):
        refused = method("/metrics", data=b"x")
        assert refused.status_code == 405 and "x-openstack-request-id" in refused.headers
    odd = client.get("/metrics?name[]=metalcast_nodes&format=%00")
    assert odd.status_code == 400        # a NUL in the query: refused before any lookup
