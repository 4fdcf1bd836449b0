"""The rolling re-image strategy on the virtual lab, driven by ``sw-manager
image-strategy`` alone: three lab machines (real IPMI BMCs, the real ramdisk agent
writing each disk file, each machine then booting what is on its disk) deployed with
v1, then one ``create --image v2 --worker-apply-type parallel
--max-parallel-worker-hosts 2`` and one ``apply``: two stages (two machines, then
the third), each machine rebuilt through the ramdisk and booting v2.
"""
from __future__ import annotations

import json
import subprocess

from cli.client import Client
from tests.functional.orchestration_lab import BIN
from tests.functional.test_lab_deploy import (  # noqa: F401 - fixtures
    IMAGE_MIB,
    WAIT,
    _available,
    _booted_v1,
    _move,
    appliance,
    lab,
)
from virtlab import images
from virtlab.demo import lab as demo_lab


def sw_manager(running, *argv: str) -> subprocess.CompletedProcess:
    """metalcast's ``sw-manager image-strategy ...`` against the ``running`` appliance."""
    return subprocess.run([str(BIN / "sw-manager"), "--url", running.url,
                           "image-strategy", *argv], capture_output=True, text=True,
                          timeout=600)


def test_rolling_reimage_two_at_a_time(appliance, lab):  # noqa: F811 - fixtures
    running = lab(3)
    client = Client(appliance.url)
    v1_url = f"{appliance.http}/lab-v1.img"
    uuids = {_available(client, running, name, v1_url, appliance.v1_sha256): name
             for name in running.machines}
    deployed = _move(client, list(uuids), "active", "active")
    assert {n["provision_state"] for n in deployed.values()} == {"active"}, deployed
    for name in uuids.values():
        _booted_v1(running, name)
    v2 = images.build_image(appliance.httpboot / "lab-v2.img", "2", IMAGE_MIB)
    checksum = "sha256:" + demo_lab.sha256_of(v2)

    created = sw_manager(appliance, "create", "--image", f"{appliance.http}/lab-v2.img",
                         "--image-checksum", checksum, "--worker-apply-type", "parallel",
                         "--max-parallel-worker-hosts", "2")
    assert created.returncode == 0, created.stdout + created.stderr
    assert created.stdout.startswith("Strategy Image Update Strategy:\n")
    shown = sw_manager(appliance, "show", "--format", "json")
    strategy = json.loads(shown.stdout)["strategy"]
    groups = [step["entity-names"] for stage in strategy["apply-phase"]["stages"]
              for step in stage["steps"] if step["step-name"] == "rebuild-hosts"]
    assert [len(group) for group in groups] == [2, 1]
    assert sorted(sum(groups, [])) == sorted(client.get_node(u)["name"] for u in uuids)

    assert sw_manager(appliance, "apply").returncode == 0
    watched = sw_manager(appliance, "show", "--watch", "--interval", "1")
    assert watched.returncode == 0, watched.stdout[-3000:] + watched.stderr
    final = json.loads(sw_manager(appliance, "show", "--format", "json").stdout)["strategy"]
    assert final["state"] == "applied", final["apply-phase"]["reason"]
    for uuid, name in uuids.items():
        node = client.get_node(uuid)
        assert node["provision_state"] == "active" and not node["maintenance"]
        assert node["instance_info"]["image_source"].endswith("/lab-v2.img")
        running.wait(name, lambda s: (s["booted_os"] or {}).get("version_id") == "2",
                     "booted v2", WAIT)
    assert sw_manager(appliance, "delete").stdout == "Strategy deleted\n"
