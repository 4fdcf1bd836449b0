"""Issue 17 item 6 at its scale: three ``metalcast serve --role conductor`` and two
``--role api`` processes on one PostgreSQL; 3,000 fake-hardware nodes enrolled through
both APIs and deployed across the conductors; one conductor SIGKILLed while its
deploys run (``driver_info.fake_delay`` keeps each deploy in flight for a moment) ->
every node ends ``active`` or ``deploy failed`` with no lock left, the failed ones are
exactly some of the dead conductor's nodes and name it, and their redeploy succeeds
on the survivors. Then every node's fake BMC is switched off behind the conductors'
backs (``driver_info.fake_power_state``) and every node's recorded power state
follows: the power sync of the two live conductors covers all 3,000 nodes, the dead
one's included.

Enroll goes through the REST API (several client threads over both API processes);
verify and automated clean are not what this test is about, so the enrolled nodes are
moved to ``available`` (powered off) by one UPDATE in the database.
"""
from __future__ import annotations

import signal
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
import sqlalchemy as sa

from conductor.db.schema import nodes
from tests.functional.conftest import stop_server
from tests.functional.helpers import HEADERS
from tests.functional.test_conductors import cluster_db  # noqa: F401 - a fixture
from tests.functional.test_roles import MEMBERSHIP, _start_apis, _start_conductor
from tests.waiting import wait_until

COUNT = 3000
CONDUCTORS = ("scale-c1", "scale-c2", "scale-c3")
SURVIVORS = {"scale-c1", "scale-c2"}
#: A power sync every 2 s; 32 workers each, so a conductor's share of deploys (each
#: ``FAKE_DELAY`` long) runs many at a time.
CONDUCTOR = {**MEMBERSHIP, "sync_power_state_interval": 2, "workers": 32,
             "max_queued": 64}
FAKE_DELAY = 0.5
CLIENTS = 8
#: Generous waits for a loaded 2-core machine; never a measurement.
SETTLE = 300

pytestmark = pytest.mark.timeout(600)


@pytest.fixture
def cluster(cluster_db, tmp_path):  # noqa: F811 - the fixture imported above
    processes, conductors, apis = [], {}, []
    try:
        for name in CONDUCTORS:
            conductors[name] = _start_conductor(tmp_path / name, cluster_db, name,
                                                CONDUCTOR)[0]
            processes.append(conductors[name])
        apis = _start_apis(tmp_path, cluster_db, "scale-api", CONDUCTOR, processes)
        engine = sa.create_engine(cluster_db)
        yield conductors, apis, engine
        engine.dispose()
    finally:
        for process in processes:
            if process.poll() is None:
                stop_server(process)


class Client:
    """REST calls spread over both API processes, one kept session per thread."""

    def __init__(self, apis):
        self.urls = [api.url for api in apis]
        self.local = threading.local()

    def call(self, index: int, method: str, path: str, body=None, ok=(200,)):
        session = getattr(self.local, "session", None)
        if session is None:
            session = self.local.session = requests.Session()
        url = self.urls[index % len(self.urls)]

        def answered():   # a 409 (a periodic task holds the lock) is retried, as clients do
            response = session.request(method, url + path, json=body, headers=HEADERS,
                                       timeout=60)
            return response if response.status_code != 409 else None
        response = wait_until(answered, 30, 0.2, f"{method} {path} without a 409")
        assert response.status_code in ok, response.text
        return response.json() if response.content else None

    def many(self, calls: list[tuple]) -> list:
        """(method, path, body, ok) calls on CLIENTS threads, alternating the APIs."""
        with ThreadPoolExecutor(CLIENTS) as pool:
            return list(pool.map(lambda item: self.call(item[0], *item[1]),
                                 enumerate(calls)))

    def walk(self) -> dict[str, dict]:
        """Every node through ``GET /v1/nodes?detail=true`` pages of 1,000."""
        seen: dict[str, dict] = {}
        marker = ""
        while True:
            page = self.call(len(seen) // 1000, "GET",
                             f"/v1/nodes?detail=true&limit=1000{marker}")["nodes"]
            seen.update((node["uuid"], node) for node in page)
            if len(page) < 1000:
                return seen
            marker = f"&marker={page[-1]['uuid']}"


def deploy_calls(uuids) -> list[tuple]:
    return [("PUT", f"/v1/nodes/{uuid}/states/provision", {"target": "active"}, (202,))
            for uuid in uuids]


def counts(engine, *where) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(nodes)
                            .where(*where)).scalar()


def settled(engine) -> bool:
    """Every node active or deploy failed, none locked."""
    return counts(engine, nodes.c.reservation.is_(None),
                  nodes.c.provision_state.in_(("active", "deploy failed"))) == COUNT


def frozen_with_work(conductor, name: str, engine) -> set[str]:
    """SIGSTOP ``conductor`` (named ``name``); read the deploys it runs itself: locked in
    its name and claimed (``conductor_affinity`` is its name; a hand-over it has not
    claimed yet is not one). While it is stopped nothing it runs can finish, so what is
    read is what the SIGKILL that follows interrupts. None running: SIGCONT, and the
    caller retries (between two claims a loaded conductor can run none for a moment)."""
    conductor.send_signal(signal.SIGSTOP)
    with engine.connect() as conn:
        held = conn.execute(sa.select(nodes.c.uuid, nodes.c.conductor_affinity).where(
            nodes.c.reservation == name)).all()
    running = {uuid for uuid, affinity in held if affinity == name}
    if not running:
        conductor.send_signal(signal.SIGCONT)
    return running


def test_three_thousand_nodes_a_conductor_killed_mid_deploy(cluster):
    conductors, apis, engine = cluster
    client = Client(apis)
    wait_until(lambda: {c["hostname"]: c["alive"] for c in client.call(
        0, "GET", "/v1/conductors")["conductors"]} == dict.fromkeys(CONDUCTORS, True),
        60, 0.2, "the three conductors (and no API process) listed alive")

    created = client.many([("POST", "/v1/nodes", {
        "driver": "fake-hardware", "name": f"scale-{i:04d}",
        "driver_info": {"fake_delay": FAKE_DELAY}}, (201,)) for i in range(COUNT)])
    uuids = [node["uuid"] for node in created]
    with engine.begin() as conn:     # verify and clean are not this test's subject
        conn.execute(nodes.update().values(provision_state="available",
                                           power_state="power off"))
    owners = {uuid: node["conductor"] for uuid, node in client.walk().items()}
    assert set(owners.values()) == set(CONDUCTORS)
    on_c3 = {uuid for uuid, owner in owners.items() if owner == "scale-c3"}

    # Deploy all 3,000 through both APIs; kill scale-c3 once a third is active.
    deploying = threading.Thread(target=client.many, args=(deploy_calls(uuids),))
    deploying.start()
    wait_until(lambda: counts(engine, nodes.c.provision_state == "active") >= COUNT // 3,
               SETTLE, 0.1, "a third of the nodes active")
    c3 = conductors["scale-c3"]
    running = wait_until(lambda: frozen_with_work(c3, "scale-c3", engine), SETTLE, 0.2,
                         "scale-c3 stopped while a deploy of its own was in flight")
    c3.send_signal(signal.SIGKILL)
    c3.wait(10)
    deploying.join()

    wait_until(lambda: settled(engine), SETTLE, 0.5,
               "every node active or deploy failed with no lock after the kill")
    final = client.walk()
    assert set(final) == set(uuids)
    assert all(node["reservation"] is None for node in final.values())
    failed = {uuid for uuid, node in final.items()
              if node["provision_state"] == "deploy failed"}
    assert running <= failed <= on_c3
    for uuid in failed:
        assert "Conductor scale-c3 died" in final[uuid]["last_error"], final[uuid]
    assert {node["conductor"] for node in final.values()} == SURVIVORS

    client.many(deploy_calls(sorted(failed)))          # redeployed on the survivors
    wait_until(lambda: counts(engine, nodes.c.provision_state == "active",
                              nodes.c.reservation.is_(None)) == COUNT, SETTLE, 0.5,
               "every failed node redeployed")
    final = client.walk()
    assert {node["provision_state"] for node in final.values()} == {"active"}
    assert all(not final[uuid]["last_error"] for uuid in failed)

    # Power sync after the kill: every fake BMC switched off behind the conductors'
    # backs; only a live conductor's sync can record it, for all 3,000 nodes.
    assert {node["power_state"] for node in final.values()} == {"power on"}
    with engine.begin() as conn:
        for node_id, info in conn.execute(sa.select(nodes.c.id, nodes.c.driver_info)).all():
            conn.execute(nodes.update().where(nodes.c.id == node_id).values(
                driver_info={**(info or {}), "fake_power_state": "power off"}))
    wait_until(lambda: counts(engine, nodes.c.power_state == "power off") == COUNT,
               SETTLE, 0.5, "every node's power state synced by a live conductor")
    final = client.walk()
    assert {node["power_state"] for node in final.values()} == {"power off"}
    assert {final[uuid]["conductor"] for uuid in on_c3} <= SURVIVORS
