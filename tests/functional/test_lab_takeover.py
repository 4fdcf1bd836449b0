"""Issue 17 item 6, the virtual-lab half: two ``metalcast serve --role conductor`` (boot
servers on, real IPMI to the lab's BMCs) and one ``--role api`` process on PostgreSQL;
two lab machines whose nodes the hash ring gives the first conductor PXE-boot the real
``metalcast-agent`` from it. That conductor is SIGKILLed while the machines are in
``wait call-back`` with their agents writing the image (the test holds both downloads
until after the kill: on a loaded machine the first could otherwise finish its deploy
before the second reaches that point): the agents keep heartbeating to the API process
(their ``ipa-api-url``, ``[pxe] api_url``, as a real site puts a load balancer in front
of its API processes), the survivor takes the nodes over and finishes both
deploys, and each machine then boots the image from its disk.

Everything a machine fetches from the first conductor's boot servers (the iPXE script,
the deploy kernel and ramdisk) is fetched before the kill; the image comes from a
server of the test's own, not from the conductor that dies.
"""
from __future__ import annotations

import signal
import subprocess
import threading
from pathlib import Path

import pytest

from cli.client import Client
from tests.functional.conftest import (
    BIN_DIR,
    START_TIMEOUT,
    _clean_env,
    start_server,
    stop_server,
)
from tests.functional.helpers import mac
from tests.functional.ipmi_peers import require
from tests.functional.test_conductors import cluster_db  # noqa: F401 - a fixture
from tests.functional.test_virtlab_machine import require_image_tools
from tests.waiting import wait_until
from virtlab import images
from virtlab.demo import lab as demo_lab
from virtlab.imageserver import ImageServer
from virtlab.lab import start_lab, stop_lab

NAMES = ("lab-c1", "lab-c2")
MEMBERSHIP = {"heartbeat_interval": 1, "heartbeat_timeout": 10,
              "hash_ring_reset_interval": 1, "check_provision_state_interval": 1,
              # the takeover (heartbeat_timeout + an interval) comes well before this
              "deploy_callback_timeout": 180}
IMAGE_MIB = 24
DISK_MIB = 32
WAIT = 240          # generous for a loaded 2-core machine, never a timing assertion
MACHINES = 2

pytestmark = pytest.mark.timeout(900)


class Conductor:
    """One ``metalcast serve --role conductor`` with its boot servers."""

    def __init__(self, data_dir: Path, db: str, name: str, api_url: str, key_file: Path):
        data_dir.mkdir(parents=True, exist_ok=True)
        sections = demo_lab.merged(demo_lab.DEMO_SECTIONS, {
            "database": {"connection": db}, "pxe": {"api_url": api_url},
            "secrets": {"key_file": key_file},
            "conductor": {"host": name, **MEMBERSHIP}})
        config = demo_lab.write_config(data_dir / "test.conf", sections)
        self.process = subprocess.Popen(
            [str(BIN_DIR / "metalcast"), "serve", "--role", "conductor", "--host",
             "127.0.0.1", "--data-dir", str(data_dir), "--config-file", str(config)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_clean_env())
        self.log: list[str] = []
        ready = threading.Event()

        def pump():
            for line in self.process.stdout:
                self.log.append(line)
                if " running (--role conductor" in line:
                    ready.set()
            ready.set()
        threading.Thread(target=pump, daemon=True).start()
        ready.wait(START_TIMEOUT)
        text = "".join(self.log)
        tftp, http = demo_lab.TFTP_RE.search(text), demo_lab.HTTP_RE.search(text)
        if " running (--role conductor" not in text or not tftp or not http:
            stop_server(self.process)
            pytest.fail("metalcast serve --role conductor did not start:\n" + text)
        self.tftp, self.http = tftp.group(1), http.group(1)
        demo_lab.write_placeholder_agent(data_dir / "httpboot")


@pytest.fixture
def cluster(cluster_db, tmp_path):  # noqa: F811 - the fixture imported above
    require("ipmitool")
    require_image_tools()
    # One secrets key for every process, as a site shares it: BMC passwords are
    # encrypted by the API process that takes them and read by the conductors.
    key_file = tmp_path / "keys" / "secrets.key"
    # The API process checks a deploy's boot settings before it hands the deploy
    # over: it is given the conductors' [pxe] settings and deploy files.
    demo_lab.write_placeholder_agent(tmp_path / "api" / "httpboot")
    api = start_server(tmp_path / "api", {
        "database": {"connection": cluster_db}, "api": {"auth_strategy": "none"},
        "pxe": demo_lab.DEMO_SECTIONS["pxe"],
        "secrets": {"key_file": key_file},
        "conductor": {"host": "lab-api", "role": "api", **MEMBERSHIP}})
    conductors: dict[str, Conductor] = {}
    try:
        for name in NAMES:
            conductors[name] = Conductor(tmp_path / name, cluster_db, name, api.url,
                                         key_file)
        yield api, conductors
    finally:
        for conductor in conductors.values():
            stop_server(conductor.process)
        stop_server(api.process)


@pytest.fixture
def image_server(tmp_path):
    """The v1 image on an HTTP server of the test's own (it outlives any conductor)."""
    www = tmp_path / "www"
    www.mkdir()
    images.build_image(www / "lab-v1.img", "1", IMAGE_MIB)
    # Every download is held until the test releases it: a machine's write_image
    # cannot finish (nor its deploy go on) before the test lets it.
    server = ImageServer(str(www), hold_after=0)
    thread = server.start_background()
    yield server, demo_lab.sha256_of(www / "lab-v1.img")
    server.release()
    server.shutdown()
    server.server_close()
    thread.join(10)


def _nodes_of(client: Client, owner: str, count: int, url: str, digest: str) -> list[str]:
    """``count`` nodes the ring gives ``owner`` (others made on the way are deleted);
    their BMC ports and MACs come when the lab runs."""
    mine: list[str] = []
    while len(mine) < count:
        node = client.create_node({
            "driver": "ipmi", "boot_interface": "ipxe", "deploy_interface": "direct",
            "automated_clean": False,
            "instance_info": demo_lab.image_fields(url, digest),
            "driver_info": {"ipmi_address": "127.0.0.1", "ipmi_port": 9,
                            "ipmi_username": demo_lab.USERNAME,
                            "ipmi_password": demo_lab.PASSWORD}})
        if client.get_node(node["uuid"])["conductor"] == owner:
            mine.append(node["uuid"])
        else:
            client.delete_node(node["uuid"])
    return mine


def downloads(server: ImageServer) -> list[str]:
    """The paths of the GETs ``server`` has answered (their bodies held)."""
    return [path for method, path, _ in list(server.requests) if method == "GET"]


def _writing(node: dict) -> bool:
    """Back in wait call-back with write_image started on the agent (a worker of the
    conductor is not driving the node: the takeover keeps such a node waiting)."""
    return node["provision_state"] == "wait call-back" and (
        node["deploy_step"] or {}).get("step") == "write_image"


def test_a_conductor_killed_while_its_machines_wait_for_call_back(cluster, image_server,
                                                                   tmp_path):
    api, conductors = cluster
    client = Client(api.url)
    wait_until(lambda: {c["hostname"]: c["alive"] for c in client.request(
        "GET", "/v1/conductors")["conductors"]} == dict.fromkeys(NAMES, True), 60, 0.2,
        "both conductors alive")
    first = conductors["lab-c1"]
    images_at, digest = image_server
    uuids = _nodes_of(client, "lab-c1", MACHINES, f"{images_at.url}/lab-v1.img", digest)
    machines = [{"name": f"m{i}", "mac": mac(), "disk": str(tmp_path / f"m{i}.img"),
                 "disk_size_mib": DISK_MIB} for i in range(MACHINES)]
    lab = start_lab(demo_lab.lab_config(tmp_path, first, machines), tmp_path / "lab.json")
    try:
        names = {}
        for uuid, machine in zip(uuids, machines):
            port = lab.machines[machine["name"]]["bmc_port"]
            client.update_node(uuid, [{"op": "replace", "path": "/driver_info/ipmi_port",
                                       "value": port}])
            client.create_port({"node_uuid": uuid, "address": machine["mac"]})
            names[uuid] = machine["name"]
        for target, state in (("manage", "manageable"), ("provide", "available")):
            for uuid in uuids:
                client.set_provision_state(uuid, target)
            reached = demo_lab.wait_all(client, uuids, (state, "verify failed"), WAIT)
            assert {n["provision_state"] for n in reached.values()} == {state}, reached
        for uuid in uuids:
            client.set_provision_state(uuid, "active")

        # Both machines run their agent, which is writing the image: the downloads are
        # held, so neither write ends and neither deploy goes on before the kill (a
        # machine that came up first could otherwise be past wait call-back, or active,
        # by the time the second one is waiting).
        for uuid, name in names.items():
            lab.wait(name, lambda s: s["phase"] == "agent" and s["agent"], "agent", WAIT)
            wait_until(lambda node=uuid: _writing(client.get_node(node)), WAIT, 0.2,
                       f"{name} in wait call-back with write_image started")
        wait_until(lambda: len(downloads(images_at)) >= MACHINES, WAIT, 0.2,
                   lambda: f"both agents downloading the image: {images_at.requests}")
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(10)
        killed_in = {uuid: client.get_node(uuid) for uuid in uuids}
        assert all(map(_writing, killed_in.values())), killed_in
        images_at.release()              # the writes go on; the survivor sees them end

        final = demo_lab.wait_all(client, uuids, ("active", "deploy failed"), WAIT)
        assert {n["provision_state"] for n in final.values()} == {"active"}, \
            {n["uuid"]: n["last_error"] for n in final.values()}
        for uuid, node in final.items():
            assert node["conductor"] == "lab-c2" and node["reservation"] is None
            booted = lab.wait(names[uuid], lambda s: s["phase"] == "booted-disk" and (
                s["booted_os"] or {}).get("version_id") == "1", "booted v1", WAIT)
            assert booted["last_agent"]["power_event"] == "power_off"
    finally:
        agents = [s["agent"]["pid"] for s in map(lab.status, lab.machines) if s["agent"]]
        stop_lab(lab)
        for pid in agents:
            assert not Path(f"/proc/{pid}").exists() or \
                "zombie" in Path(f"/proc/{pid}/status").read_text(), "an agent outlived the lab"
