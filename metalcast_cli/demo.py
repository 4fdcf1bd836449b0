"""``metalcast demo``: the appliance on SQLite with fake hardware, driven over HTTP.

Starts the API + conductor in this process on a free loopback port, enrols a few
fake nodes with MACs, then manages, provides and deploys them with progress shown,
and prints the node table.
"""
from __future__ import annotations

import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

from conductor import config
from metalcast_cli import output
from metalcast_cli.client import Client
from metalcast_cli.server import Server

PHASES = (("manage", "manageable"), ("provide", "available"), ("active", "active"))


def _phase(client: Client, uuids: list[str], target: str, expected: str) -> float:
    start = time.monotonic()
    bar = output.Progress(len(uuids), f"{target:>8}", out=sys.stdout)

    def one(uuid):
        client_ = Client(client.url)
        client_.set_provision_state(uuid, target)
        client_.wait_for_state(uuid, expected, timeout=120, interval=0.2)
        bar.advance(note=expected)

    with ThreadPoolExecutor(len(uuids)) as pool:
        list(pool.map(one, uuids))
    return time.monotonic() - start


def run(nodes: int = 3, data_dir: str | None = None, keep: bool = False) -> int:
    tmp = None if data_dir else tempfile.TemporaryDirectory(prefix="metalcast-demo-")
    settings = config.load(overrides={"data_dir": data_dir or tmp.name, "api_port": 0,
                                      "pxe_tftp_port": 0, "pxe_http_port": 0},  # free ports
                           env={})
    server = Server(settings)
    server.start_in_thread()
    print(f"metalcast demo: API at {server.url}, data in {settings.data_path}")
    client = Client(server.url)
    uuids = []
    for i in range(nodes):
        node = client.create_node({"name": f"demo-{i}", "driver": "fake-hardware",
                                   "driver_info": {"fake_delay": 0.5,
                                                   "ipmi_password": "secret"},
                                   "properties": {"cpus": 4, "memory_mb": 8192}})
        client.create_port({"address": f"52:54:00:00:00:{i:02x}", "node_uuid": node["uuid"]})
        uuids.append(node["uuid"])
    print(f"enrolled {nodes} fake nodes with one port each")
    for uuid in uuids:
        client.update_node(uuid, [{"op": "add", "path": "/instance_info/image_source",
                                   "value": "http://images.example/demo.raw"}])
    for target, expected in PHASES:
        seconds = _phase(client, uuids, target, expected)
        print(f"  {target}: {nodes} node(s) {expected} in {seconds:.1f}s")
    output.table(client.list_nodes(), ["uuid", "name", "power_state", "provision_state",
                                       "maintenance"])
    if keep:
        print(f"Still serving at {server.url}; press Ctrl-C to stop.")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    server.close()
    if tmp:
        tmp.cleanup()
    return 0
