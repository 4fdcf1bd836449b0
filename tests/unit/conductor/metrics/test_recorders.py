"""The event recorders against their own registries (no database, no thread)."""
import logging

from prometheus_client import CollectorRegistry

from conductor import request_ids
from conductor.metrics.boot import BootMetrics, OpenSessions
from conductor.metrics.events import EngineMetrics
from conductor.metrics.provisioning import ProvisionTimer


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def value(registry, name, **labels):
    return registry.get_sample_value(name, labels) or 0


def timer():
    registry, clock = CollectorRegistry(), Clock()
    return registry, clock, ProvisionTimer(registry, clock)


def test_a_deploy_is_timed_from_its_start_across_the_wait_to_active():
    registry, clock, provisioning = timer()
    provisioning.transition(1, "available", "deploying")
    clock.now += 30
    provisioning.transition(1, "deploying", "wait call-back")   # same phase: no restart
    clock.now += 60
    provisioning.transition(1, "wait call-back", "deploying")
    clock.now += 10
    provisioning.transition(1, "deploying", "active")
    labels = {"operation": "deploy", "result": "success"}
    assert value(registry, "metalcast_provision_duration_seconds_count", **labels) == 1
    assert value(registry, "metalcast_provision_duration_seconds_sum", **labels) == 100


def test_rebuild_failure_and_clean_are_told_apart():
    registry, clock, provisioning = timer()
    provisioning.transition(1, "active", "deploying")
    provisioning.transition(2, "available", "deploying")
    provisioning.transition(3, "manageable", "cleaning")
    clock.now += 5
    provisioning.transition(1, "deploying", "active")
    provisioning.transition(2, "wait call-back", "deploy failed")
    provisioning.transition(3, "clean wait", "manageable")
    for operation, result in (("rebuild", "success"), ("deploy", "failure"),
                              ("clean", "success")):
        assert value(registry, "metalcast_provision_duration_seconds_count",
                     operation=operation, result=result) == 1


def test_an_end_whose_start_this_process_did_not_see_observes_nothing():
    registry, _clock, provisioning = timer()
    provisioning.transition(7, "deploying", "active")
    provisioning.transition(7, "active", "deleting")
    assert value(registry, "metalcast_provision_duration_seconds_count",
                 operation="deploy", result="success") == 0


def test_engine_and_boot_counters():
    registry = CollectorRegistry()
    engine, boot = EngineMetrics(registry), BootMetrics(registry)
    engine.power_sweep(0.5, {"ipmi": 2, "redfish": 1})
    engine.power_sweep(0.25, {"ipmi": 1})
    engine.heartbeat(True)
    engine.heartbeat(False)
    engine.callback_timeout("clean wait")
    boot.transfer("tftp", True, 1024)
    boot.transfer("tftp", False, 0)
    assert value(registry, "metalcast_power_sync_duration_seconds_count") == 2
    assert value(registry, "metalcast_bmc_errors_total", driver="ipmi") == 3
    assert value(registry, "metalcast_agent_heartbeats_total", result="refused") == 1
    assert value(registry, "metalcast_agent_callback_timeouts_total", state="clean wait") == 1
    assert value(registry, "metalcast_boot_bytes_total", protocol="tftp") == 1024
    assert value(registry, "metalcast_boot_sessions_total", protocol="tftp",
                 result="aborted") == 1


def test_open_sessions_are_read_at_scrape_time():
    counts = {"tftp": 1, "http": 0}
    registry = CollectorRegistry()
    registry.register(OpenSessions(lambda: counts))
    counts["http"] = 4
    assert value(registry, "metalcast_boot_sessions_open", protocol="http") == 4


def test_the_log_filter_names_the_current_request_or_a_dash():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", (), None)
    request_ids.RequestIdFilter().filter(record)
    assert record.request_id == "-"
    token = request_ids.CURRENT.set("req-1")
    try:
        request_ids.RequestIdFilter().filter(record)
    finally:
        request_ids.CURRENT.reset(token)
    assert record.request_id == "req-1" and request_ids.current() is None
