"""A ``metalcast serve`` killed with SIGKILL in the middle of a strategy's apply and
started again on the same data dir: the running step is failed cleanly (the node
whose rebuild the dead process was running is ``deploy failed``, from which it can be
rebuilt again), the strategy aborts and says which host and why, and nothing is left
half-done. The rolling re-image strategy on fake-hardware nodes whose deploy takes a
few seconds (driver_info fake_delay) gives the window; the walkthroughs with real
host agents do the same for patches (test_orchestration_walkthrough.py)."""
from __future__ import annotations

import urllib.parse

from tests.functional.conftest import start_server, stop_server
from tests.functional.helpers import api_call, provision
from tests.waiting import wait_until

PATH = "/api/orchestration/image-update/strategy"
SECTIONS = {"orchestration": {"audit_interval": 0.2, "stabilize_factor": 0}}
CREATE = {"image": "http://images.example/v2.img", "image-checksum": "sha256:" + "ef" * 32}


def test_sigkill_mid_apply_fails_the_running_step_cleanly(tmp_path):
    server = start_server(tmp_path / "data", SECTIONS)
    try:
        for name in ("node-a", "node-b"):
            node = api_call(server.url, "POST", "/v1/nodes", {
                "driver": "fake-hardware", "name": name,
                "driver_info": {"fake_delay": 6}}, ok=(201,))
            provision(server.url, node["uuid"], "manage", "manageable")
            provision(server.url, node["uuid"], "adopt", "active")
        created = api_call(server.url, "POST", PATH, CREATE)["strategy"]
        assert created["state"] == "ready-to-apply"
        api_call(server.url, "POST", PATH + "/actions", {"action": "apply-all"}, ok=(202,))
        wait_until(lambda: api_call(server.url, "GET", "/v1/nodes/node-a")[
            "provision_state"] == "deploying", timeout=30)
        server.process.kill()                              # SIGKILL: no clean stop
        server.process.wait(30)
    finally:
        stop_server(server.process)
    port = urllib.parse.urlsplit(server.url).port
    again = start_server(tmp_path / "data", SECTIONS, port=port)
    try:
        def final():
            shown = api_call(again.url, "GET", PATH)["strategy"]
            return shown if shown["state"] not in ("applying", "aborting") else None
        shown = wait_until(final, timeout=60)
        assert shown["uuid"] == created["uuid"] and shown["state"] == "aborted", shown
        reason = shown["apply-phase"]["reason"]
        assert reason.startswith("re-image failed on host node-a (deploy failed)"), reason
        assert "restarted" in reason
        node_a = api_call(again.url, "GET", "/v1/nodes/node-a")
        assert node_a["provision_state"] == "deploy failed" and node_a["reservation"] is None
        node_b = api_call(again.url, "GET", "/v1/nodes/node-b")
        assert node_b["provision_state"] == "active"
        assert node_b["instance_info"].get("image_source") is None    # never started
        # the operator retries the node the strategy names
        provision(again.url, node_a["uuid"], "rebuild", "active")
    finally:
        stop_server(again.process)
