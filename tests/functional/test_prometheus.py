"""A real Prometheus server (Debian's ``prometheus``) scrapes a real ``metalcast serve``
over HTTP basic auth every second; PromQL over its HTTP API returns the node counts
the appliance holds. A second job without credentials is refused (``up`` 0), and the
server's own log lines carry the request IDs its answers gave."""
from __future__ import annotations

import socket
import subprocess
import uuid
from pathlib import Path

import bcrypt
import pytest
import requests

from tests.functional.conftest import start_server, stop_server
from tests.functional.tools import require
from tests.waiting import wait_until

LATEST = {"X-OpenStack-Ironic-API-Version": "latest"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def appliance(tmp_path):
    data_dir = tmp_path / "metalcast"
    data_dir.mkdir()
    password = f"pw-{uuid.uuid4().hex[:12]}"
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    (data_dir / "htpasswd").write_text(f"prometheus:{hashed}\n")
    server = start_server(data_dir, {"api": {"auth_strategy": "http_basic",
                                             "htpasswd_file": data_dir / "htpasswd"}})
    server.username, server.password = "prometheus", password
    yield server
    stop_server(server.process)


def _config(path: Path, target: str, password: str) -> Path:
    # Two jobs on the same target: with the appliance's credentials, and without.
    path.write_text(f"""
global:
  scrape_interval: 1s
  scrape_timeout: 900ms
scrape_configs:
  - job_name: metalcast
    metrics_path: /metrics
    basic_auth:
      username: prometheus
      password: "{password}"
    static_configs:
      - targets: ["{target}"]
  - job_name: anonymous
    metrics_path: /metrics
    static_configs:
      - targets: ["{target}"]
""")
    return path


@pytest.fixture
def prometheus(tmp_path, appliance):
    binary = require("prometheus")
    port = free_port()
    target = appliance.url.removeprefix("http://").rstrip("/")
    config = _config(tmp_path / "prometheus.yml", target, appliance.password)
    log = open(tmp_path / "prometheus.log", "w")
    process = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        # A starting Prometheus on a loaded machine may accept and answer after 2 s:
        # a read timeout is "not yet", as a refused connection is.
        wait_until(lambda: requests.get(f"{url}/-/ready", timeout=2).ok, 60, 0.2,
                   lambda: (tmp_path / "prometheus.log").read_text()[-3000:],
                   ignore=(requests.ConnectionError, requests.Timeout))
        yield url
    finally:
        process.terminate()           # by PID: the one process this fixture started
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        log.close()


def query(url: str, promql: str) -> dict[str, float]:
    """An instant query: the label set (as text) -> value of each series."""
    answer = requests.get(f"{url}/api/v1/query", params={"query": promql}, timeout=5)
    answer.raise_for_status()
    body = answer.json()
    assert body["status"] == "success", body
    return {",".join(f"{k}={v}" for k, v in sorted(r["metric"].items())): float(r["value"][1])
            for r in body["data"]["result"]}


def test_prometheus_scrapes_the_node_counts_and_anonymous_scrapes_are_refused(
        appliance, prometheus):
    auth = (appliance.username, appliance.password)
    api = f"{appliance.url.rstrip('/')}/v1/nodes"
    rids = []
    for index in range(7):    # API 1.1 enrolls as "available", the latest as "enroll"
        answer = requests.post(api, json={"driver": "fake-hardware",
                                          "driver_info": {"ipmi_password": "s3cret-bmc"}},
                               headers=LATEST if index < 3 else {}, auth=auth, timeout=10)
        assert answer.status_code == 201, answer.text
        rids.append(answer.headers["x-openstack-request-id"])
    assert requests.get(f"{appliance.url.rstrip('/')}/metrics", timeout=5).status_code == 401
    scraped = requests.get(f"{appliance.url.rstrip('/')}/metrics", auth=auth, timeout=5).text
    assert "s3cret-bmc" not in scraped

    def counted():
        found = query(prometheus, "sum(metalcast_nodes)")
        return found if found.get("") == 7 else None
    wait_until(counted, 60, 0.5, "Prometheus to scrape the 7 nodes")
    by_state = query(prometheus, "sum by (provision_state) (metalcast_nodes)")
    assert by_state == {"provision_state=available": 4, "provision_state=enroll": 3}
    # the two jobs are scraped on their own schedules: wait for the anonymous one's first
    # scrape too (CI saw only job=metalcast's `up` when the nodes were already counted)

    def both_scraped():
        found = query(prometheus, "sum by (job) (up)")
        return found if len(found) == 2 else None
    up = wait_until(both_scraped, 60, 0.5, "Prometheus to scrape both jobs")
    assert up == {"job=metalcast": 1, "job=anonymous": 0}
    # The server's log lines name the request that caused them.
    output = appliance.output()
    for rid in rids:
        assert any(rid in line and "enrolled" in line for line in output.splitlines()), rid
