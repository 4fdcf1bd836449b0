"""A host install asked by an API request carries that request's ID to the host's
agent (one mechanism: conductor/request_ids.py); the report answering it names it,
and the host leaves "installing" then. Outside a request the install gets its own ID."""
from __future__ import annotations

from conductor import request_ids
from tests.db.test_patch_hosts import FakeChannel, behind, controller, current, host_state
from tests.db.test_patch_hosts import root as root


def test_the_install_carries_the_api_request_id_to_the_host_and_back(root, engines):
    channel = FakeChannel()
    ctl = controller(root, engines(), channel)
    ctl.report_host(behind())
    rid = request_ids.new()
    token = request_ids.CURRENT.set(rid)
    try:
        assert ctl.host_install_async("compute-0").error == ""
    finally:
        request_ids.CURRENT.reset(token)
    [(host, _force, sent)] = channel.sent
    assert (host, sent) == ("compute-0", rid)
    assert host_state(ctl, "compute-0") == "installing"
    ctl.report_host(current("compute-0", "192.0.2.10"), answered="req-someone-else")
    assert host_state(ctl, "compute-0") == "installing"
    ctl.report_host(current("compute-0", "192.0.2.10"), answered=rid)
    assert host_state(ctl, "compute-0") == "idle"


def test_outside_a_request_the_install_gets_its_own_id(root, engines):
    channel = FakeChannel()
    ctl = controller(root, engines(), channel)
    ctl.report_host(behind())
    assert ctl.host_install_async("compute-0").error == ""
    [(_, _, request_id)] = channel.sent
    assert request_id and not request_id.startswith("req-")
