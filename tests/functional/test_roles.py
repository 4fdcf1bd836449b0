"""``metalcast serve --role``: three conductors (``--role conductor``, no REST API) and
two API processes (``--role api``, no conductor) on one PostgreSQL. Nodes enrolled
and deployed through either API run on their conductors by the hash ring; one
conductor SIGKILLed mid-deploy is taken over by the others; the API processes never
register as conductors; ``--role api|conductor`` on SQLite is refused with the fix."""
from __future__ import annotations

import re
import signal
import subprocess
import threading

import pytest

from tests.functional.conftest import (
    BIN_DIR,
    START_TIMEOUT,
    _clean_env,
    _write_config,
    start_server,
    stop_server,
)
from tests.functional.helpers import WAIT, api_call, provision
from tests.functional.test_conductors import cluster_db  # noqa: F401 - a fixture
from tests.waiting import wait_until

CONDUCTORS = ("role-c1", "role-c2", "role-c3")
MEMBERSHIP = {"heartbeat_interval": 1, "heartbeat_timeout": 10,
              "hash_ring_reset_interval": 1, "check_provision_state_interval": 1}
READY = re.compile(r"metalcast conductor (\S+) running")
COUNT = 30


def _start_conductor(data_dir, db, name, conductor=None):
    """``metalcast serve --role conductor`` (``conductor``: its [conductor] options,
    default MEMBERSHIP); returns once it says it runs."""
    data_dir.mkdir(parents=True, exist_ok=True)
    config = _write_config(data_dir, {
        "database": {"connection": db}, "pxe": {"enabled": "false"},
        "patching": {"listen_port": 0},
        "conductor": {"host": name, **(conductor or MEMBERSHIP)}})
    process = subprocess.Popen(
        [str(BIN_DIR / "metalcast"), "serve", "--role", "conductor", "--data-dir",
         str(data_dir), "--config-file", str(config)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_clean_env())
    log, ready = [], threading.Event()

    def pump():
        for line in process.stdout:
            log.append(line)
            if READY.search(line):
                ready.set()
        ready.set()
    threading.Thread(target=pump, daemon=True).start()
    ready.wait(START_TIMEOUT)
    if not any(READY.search(line) for line in log):
        stop_server(process)
        pytest.fail("metalcast serve --role conductor did not start:\n" + "".join(log))
    return process, log


def _start_apis(tmp_path, db, prefix, conductor, processes, count=2):
    """``count`` ``--role api`` processes on ``db``; each also goes in ``processes``
    (as it starts, so a later failure still stops it)."""
    apis = []
    for index in range(count):
        api = start_server(tmp_path / f"api{index}", {
            "database": {"connection": db},
            "conductor": {"host": f"{prefix}{index}", "role": "api", **conductor}})
        apis.append(api)
        processes.append(api.process)
    return apis


@pytest.fixture
def roles(cluster_db, tmp_path):  # noqa: F811 - the fixture imported above
    processes = []
    conductors = {}
    apis = []
    try:
        for name in CONDUCTORS:
            conductors[name] = _start_conductor(tmp_path / name, cluster_db, name)
            processes.append(conductors[name][0])
        apis = _start_apis(tmp_path, cluster_db, "role-api", MEMBERSHIP, processes)
        yield conductors, apis
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
                stop_server(process)


def _nodes(api) -> dict[str, dict]:
    body = api_call(api.url, "GET", "/v1/nodes?detail=true&limit=1000")
    return {n["uuid"]: n for n in body["nodes"]}


def test_api_and_conductor_processes_on_one_postgresql(roles):
    conductors, (api1, api2) = roles
    alive = wait_until(lambda: (lambda seen: seen if seen == dict.fromkeys(
        CONDUCTORS, True) else None)({c["hostname"]: c["alive"] for c in api_call(
            api1.url, "GET", "/v1/conductors")["conductors"]}), 60, 0.2,
        "the three conductors (and no API process) to be listed")
    assert set(alive) == set(CONDUCTORS)
    uuids = [api_call(api1.url, "POST", "/v1/nodes", {"driver": "fake-hardware"},
                      ok=(201,))["uuid"] for _ in range(COUNT)]
    for uuid in uuids:                   # verify, clean, deploy: every one handed over
        provision(api2.url, uuid, "manage", "manageable")
        provision(api1.url, uuid, "provide", "available")
    owners = {u: n["conductor"] for u, n in _nodes(api1).items()}
    assert set(owners.values()) == set(CONDUCTORS)
    on_c3 = {u for u, owner in owners.items() if owner == "role-c3"}

    c3 = conductors["role-c3"][0]
    c3.send_signal(signal.SIGSTOP)
    for index, uuid in enumerate(uuids):
        api = (api1, api2)[index % 2]
        api_call(api.url, "PUT", f"/v1/nodes/{uuid}/states/provision", {"target": "active"},
                 ok=(202,))
    c3.send_signal(signal.SIGKILL)
    c3.wait(10)

    def settled():
        nodes = _nodes(api2)
        return nodes if all(n["reservation"] is None and n["provision_state"] in
                            ("active", "deploy failed") for n in nodes.values()) else None
    final = wait_until(settled, WAIT, 0.5, "every node stable with no lock after the kill")
    failed = {u for u, n in final.items() if n["provision_state"] == "deploy failed"}
    assert failed == on_c3
    for uuid in failed:
        assert "Conductor role-c3 died" in final[uuid]["last_error"]
        provision(api2.url, uuid, "active", "active")
    final = _nodes(api1)
    assert {n["provision_state"] for n in final.values()} == {"active"}
    assert {n["conductor"] for n in final.values()} <= {"role-c1", "role-c2"}


@pytest.mark.parametrize("role", ["api", "conductor"])
def test_a_role_on_sqlite_is_refused_with_the_fix(tmp_path, role):
    refused = subprocess.run(
        [str(BIN_DIR / "metalcast"), "serve", "--role", role, "--port", "0",
         "--data-dir", str(tmp_path / "solo")],
        capture_output=True, text=True, timeout=60, env=_clean_env())
    assert refused.returncode == 1
    assert f"--role {role}" in refused.stderr and "PostgreSQL" in refused.stderr
    assert "--role all" in refused.stderr and "listening" not in refused.stdout
