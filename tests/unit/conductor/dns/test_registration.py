"""DNS registration logic: host labels, reverse names, settings, and the pending state
kept in driver_internal_info (with a recording fake in place of the DNS server)."""
from __future__ import annotations

import dataclasses

import pytest

from conductor import errors
from conductor.config import Settings, from_options
from conductor.db import migrate
from conductor.db.engine import make_engine
from conductor.db.queries import Store
from conductor.dns import registration as reg
from conductor.dns import rfc2136 as dns
from conductor.drivers.context import DriverContext
from conductor.drivers.registry import DriverRegistry
from conductor.engine.task import Task

SECRET = "N6WA9fS3/DT3j8koXn6cFulLCTHh6lrQN9TX/Qx1nYo="


@pytest.mark.parametrize("name, label", [
    ("web01", "web01"),
    ("Web01", "web01"),
    ("rack1_node.7", "rack1-node-7"),
    ("node 12", "node-12"),
    ("--edge--", "edge"),
    ("a__b", "a-b"),
    ("web01.lab.test", "web01"),            # the node was named after its FQDN
    ("web01.lab.test.", "web01"),
    ("web01.other.test", "web01-other-test"),
    ("nöde", "n-de"),
    ("x" * 63, "x" * 63),
])
def test_host_label(name, label):
    assert dns.host_label(name, "lab.test.") == label


@pytest.mark.parametrize("name", [None, "", "___", "-", "ü", "x" * 64, "..."])
def test_host_label_refused(name):
    assert dns.host_label(name, "lab.test") is None


@pytest.mark.parametrize("address, ptr", [
    ("10.77.0.5", "5.0.77.10.in-addr.arpa."),
    ("192.0.2.255", "255.2.0.192.in-addr.arpa."),
    ("fd77::5", "5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.7.7.d.f.ip6.arpa."),
    ("FD77:0:0:0::a",
     "a.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.7.7.d.f.ip6.arpa."),
])
def test_reverse_name(address, ptr):
    assert dns.reverse_name(address).to_text() == ptr


def test_split_addresses():
    good, bad = dns.split_addresses(["10.0.0.1", " fd00::1 ", "10.0.0.1", "nope", "300.1.1.1"])
    assert good == ["10.0.0.1", "fd00::1"]
    assert bad == ["nope", "300.1.1.1"]


def _settings(options: dict | None = None) -> Settings:
    base = {"dns.server": "127.0.0.1", "dns.zone": "lab.test", "dns.tsig_key_name": "k",
            "dns.tsig_secret": SECRET}
    return from_options({**base, **(options or {})})


def test_config_parsed():
    config = dns.DnsConfig.from_settings(_settings({"dns.reverse_zone_v4": "77.10.in-addr.arpa"}))
    assert config.zone.to_text() == "lab.test."
    assert config.reverse_zone_v4.to_text() == "77.10.in-addr.arpa."
    assert config.reverse_zone_v6 is None
    assert SECRET not in repr(config)
    assert SECRET not in repr(_settings())


@pytest.mark.parametrize("values, fragment", [
    ({"dns.zone": ""}, "dns.zone is required"),
    ({"dns.tsig_secret": ""}, "must be set together"),
    ({"dns.tsig_secret": "not base64!"}, "not valid base64"),
    ({"dns.tsig_algorithm": "hmac-sha3"}, "dns.tsig_algorithm must be one of"),
    ({"dns.protocol": "quic"}, "dns.protocol"),
    ({"dns.timeout": 0}, "dns.timeout"),
    ({"dns.port": 70000}, "dns.port"),
    ({"dns.reverse_zone_v4": "lab.test"}, "must lie under in-addr.arpa."),
    ({"dns.reverse_zone_v6": "77.10.in-addr.arpa"}, "must lie under ip6.arpa."),
    ({"dns.server": "bad host!"}, "neither an IP address nor a host name"),
])
def test_config_refused(values, fragment):
    with pytest.raises(errors.ConfigError) as info:
        dns.build(_settings(values))
    assert fragment in str(info.value)
    assert SECRET not in str(info.value)


def test_build_without_server_is_noop():
    assert isinstance(dns.build(Settings()), dns.NoopDns)
    assert dns.build(Settings()).register("x", ["10.0.0.1"]) == []


def test_records_without():
    a = reg.HostRecords("web", "web.lab.test.", ("10.0.0.1", "10.0.0.2"))
    assert a.without(None) == a
    only_second = dataclasses.replace(a, addresses=("10.0.0.2",))
    assert a.without(only_second).addresses == ("10.0.0.1",)
    assert a.without(a) is None
    assert a.without(dataclasses.replace(a, fqdn="other.lab.test.")) == a


class RecordingDns(dns.DnsInterface):
    """The DNS twin for logic tests: records calls, fails while ``failing`` is set."""

    zone = "lab.test."

    def __init__(self):
        self.calls: list[tuple[str, str, tuple[str, ...]]] = []
        self.failing: str | None = None

    def validate(self):
        pass

    def fqdn(self, label):
        return f"{label}.{self.zone}"

    def register(self, name, addresses):
        return self._call("register", name, addresses)

    def unregister(self, name, addresses):
        return self._call("unregister", name, addresses)

    def _call(self, op, name, addresses):
        if self.failing:
            raise errors.DriverError(reason=self.failing)
        self.calls.append((op, name, tuple(addresses)))
        return []


@pytest.fixture
def store(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    migrate.upgrade(engine)
    return Store(engine)


def _task(store, name="web", addresses=("10.0.0.1",)):
    node = store.create_node({"driver": "fake-hardware", "name": name,
                              "provision_state": "deploying", "driver_internal_info": {},
                              "instance_info": {"ip_address": list(addresses)}})
    return Task(store, node, "test-host", DriverRegistry(DriverContext.create(Settings())))


def _info(store, task):
    return store.get_node_by_id(task.node.id).driver_internal_info


def test_failure_leaves_pending_then_retry_registers(store):
    client, task = RecordingDns(), _task(store)
    client.failing = "DNS server 127.0.0.1:53 did not answer within 5s"
    wanted = reg.wanted_records(task, client)
    assert reg.reconcile(task, client, wanted) is False
    info = _info(store, task)
    assert reg.RECORDS_KEY not in info
    assert info[reg.PENDING_KEY]["action"] == "register"
    assert info[reg.PENDING_KEY]["attempts"] == 1
    assert "did not answer" in info[reg.PENDING_KEY]["error"]
    assert reg.reconcile(task, client, wanted) is False
    assert _info(store, task)[reg.PENDING_KEY]["attempts"] == 2
    client.failing = None
    pending = reg.HostRecords.from_dict(_info(store, task)[reg.PENDING_KEY]["wanted"])
    assert reg.reconcile(task, client, pending) is True
    info = _info(store, task)
    assert reg.PENDING_KEY not in info
    assert info[reg.RECORDS_KEY] == {"label": "web", "fqdn": "web.lab.test.",
                                     "addresses": ["10.0.0.1"]}
    # the half-done attempts are cleaned of nothing: same host, same address
    assert client.calls == [("register", "web", ("10.0.0.1",))]


def test_unregister_after_failed_register_removes_what_may_be_there(store):
    client, task = RecordingDns(), _task(store)
    client.failing = "REFUSED"
    reg.reconcile(task, client, reg.wanted_records(task, client))
    client.failing = None
    assert reg.reconcile(task, client, None) is True
    assert client.calls == [("unregister", "web", ("10.0.0.1",))]
    info = _info(store, task)
    assert reg.PENDING_KEY not in info and reg.RECORDS_KEY not in info


def test_new_address_removes_the_old_pointer(store):
    client, task = RecordingDns(), _task(store, addresses=("10.0.0.1", "fd00::1"))
    reg.reconcile(task, client, reg.wanted_records(task, client))
    task.node.instance_info = {"ip_address": "10.0.0.9", "ipv6_address": "fd00::1"}
    reg.reconcile(task, client, reg.wanted_records(task, client))
    assert client.calls[1:] == [("unregister", "web", ("10.0.0.1",)),
                                ("register", "web", ("10.0.0.9", "fd00::1"))]


def test_no_usable_name_or_address_registers_nothing(store, caplog):
    client = RecordingDns()
    task = _task(store, name="___", addresses=("10.0.0.1",))
    assert reg.wanted_records(task, client) is None
    assert "cannot be made into a DNS host name" in caplog.text
    task = _task(store, name="web2", addresses=("not-an-ip",))
    assert reg.wanted_records(task, client) is None
    assert "not IP addresses: not-an-ip" in caplog.text
    assert "no address known" in caplog.text
    assert task.node.uuid in caplog.text


def _pending_node(store, name, attempts, reservation=None):
    pending = {"action": "register", "attempts": attempts, "error": "timeout", "stale": [],
               "wanted": {"label": name, "fqdn": f"{name}.lab.test.",
                          "addresses": ["10.0.0.1"]}}
    return store.create_node({"driver": "fake-hardware", "name": name,
                              "provision_state": "active", "reservation": reservation,
                              "driver_internal_info": {reg.PENDING_KEY: pending}})


def _opener(store, drivers):
    """How the sweep wraps a node it locked (the appliance's Task factory)."""
    return lambda node: Task(store, node, "test-host", drivers)


def _retry(store, client):
    settings = _settings({"conductor.host": "test-host"})
    # The twin stands in for the RFC 2136 adapter.
    drivers = DriverRegistry(DriverContext.create(settings, dns=client))
    return reg.DnsRetry.for_settings(store, settings, client, _opener(store, drivers), None)


def test_retry_sweep_skips_locked_nodes_and_releases_the_lock(store):
    client = RecordingDns()
    free = _pending_node(store, "free", 3)
    locked = _pending_node(store, "locked", 1, reservation="other-conductor")
    done = _retry(store, client).sweep()
    assert done == {free.uuid: True}
    assert client.calls == [("register", "free", ("10.0.0.1",))]
    node = store.get_node_by_id(free.id)
    assert node.reservation is None
    assert reg.PENDING_KEY not in node.driver_internal_info
    assert store.get_node_by_id(locked.id).reservation == "other-conductor"


def test_retry_sweep_stops_at_the_first_failure_fewest_attempts_first(store):
    client = RecordingDns()
    client.failing = "DNS server 127.0.0.1:53 did not answer within 5s"
    stubborn, fresh = _pending_node(store, "stubborn", 9), _pending_node(store, "fresh", 1)
    assert _retry(store, client).sweep() == {fresh.uuid: False}
    assert store.get_node_by_id(fresh.id).driver_internal_info[reg.PENDING_KEY][
        "attempts"] == 2
    assert store.get_node_by_id(stubborn.id).driver_internal_info[reg.PENDING_KEY][
        "attempts"] == 9
    assert store.get_node_by_id(fresh.id).reservation is None


def test_retry_needs_a_positive_interval(store):
    with pytest.raises(errors.ConfigError, match="dns.retry_interval must be > 0"):
        bad = _settings({"dns.retry_interval": 0})
        reg.DnsRetry.for_settings(store, bad, RecordingDns(), None, None)
    plain = Settings()
    assert reg.DnsRetry.for_settings(store, plain, RecordingDns(), None, None) is None


def test_retry_sweep_takes_only_the_nodes_the_ring_maps_here(store):
    """Issue 17 item 3: of two pending nodes, the one the ring gives another live
    conductor is left to it, even when this conductor acted on it last (a takeover
    moved it away); the one the ring gives this conductor is retried here."""
    client = RecordingDns()
    mine, theirs = _pending_node(store, "mine", 1), _pending_node(store, "theirs", 1)
    store.update_node(theirs.id, {"conductor_affinity": "test-host"})
    owners = {mine.uuid: "test-host", theirs.uuid: "other-conductor"}
    settings = _settings({"conductor.host": "test-host"})
    drivers = DriverRegistry(DriverContext.create(settings, dns=client))
    retry = reg.DnsRetry.for_settings(store, settings, client, _opener(store, drivers), None,
                                      owner_of=lambda node: owners[node.uuid])
    assert retry.sweep() == {mine.uuid: True}
    assert client.calls == [("register", "mine", ("10.0.0.1",))]
    assert reg.PENDING_KEY in store.get_node_by_id(theirs.id).driver_internal_info
    # the other conductor dies: the ring names this one, and the node is retried here
    owners[theirs.uuid] = "test-host"
    assert retry.sweep() == {theirs.uuid: True}
