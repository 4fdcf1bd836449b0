"""The image-update strategy's build: checks, hosts already on the image skipped,
stages by max-parallel with the active controller last."""
from __future__ import annotations

from conductor.alarms import Alarm
from conductor.orchestration import options
from conductor.orchestration.hosts import FleetHost
from conductor.orchestration.image_build import build
from conductor.orchestration.patch_build import Snapshot

SUM = "sha256:" + "cd" * 32


def host(name, **fields):
    return FleetHost(name, f"uuid-{name}", frozenset({"worker"}), **fields)


def run(hosts, alarms=(), local="", **opts):
    chosen = options.parse_image({"image": "http://i/v2.img", "image-checksum": SUM,
                                  **{k.replace("_", "-"): v for k, v in opts.items()}})
    return build(chosen, Snapshot({h.name: h for h in hosts}, {}, list(alarms), local))


def names(stages):
    return [[n for s in stage.steps if s.name == "rebuild-hosts" for n in s.entity_names]
            for stage in stages]


def test_stages_skip_current_hosts_and_keep_the_local_host_last():
    hosts = [host("h1"), host("h2", image_checksum=SUM), host("h0"), host("h3"),
             host("gone", in_inventory=False)]
    reason, stages = run(hosts, local="h0", worker_apply_type="parallel",
                         max_parallel_worker_hosts=2)
    assert reason == "" and names(stages) == [["h1", "h3"], ["h0"]]
    assert [s.name for s in stages[0].steps] == ["query-alarms", "rebuild-hosts",
                                                  "system-stabilize"]
    info = stages[0].steps[1].params["instance_info"]
    assert info["image_source"] == "http://i/v2.img" and info["image_delta_url"] is None
    assert names(run(hosts)[1]) == [["h0"], ["h1"], ["h3"]]        # serial


def test_checks():
    assert run([host("h1", image_checksum=SUM)])[0] == "no hosts need to be re-imaged"
    assert run([host("h1", administrative="locked")])[0] == \
        "all hosts must be unlocked to be re-imaged"
    assert run([host("h1")], alarms=[Alarm("100.101", "x", "minor", "m")])[0] == \
        "active alarms present"
    assert run([host("h1")], alarms=[Alarm("100.101", "x", "minor", "m")],
               alarm_restrictions="relaxed")[0] == ""


def test_a_delta_is_passed_on_with_its_version():
    _, stages = run([host("h1")], **{"delta-url": "http://i/v1-v2.delta",
                                     "delta-version": "2"})
    info = stages[0].steps[1].params["instance_info"]
    assert info["image_delta_url"] == "http://i/v1-v2.delta"
    assert info["image_delta_version"] == "2"
