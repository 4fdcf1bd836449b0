"""Ironic's hash ring: distribution, minimal movement, groups, replicas, the ring cache."""
import datetime
import uuid

import pytest

from conductor import config, errors
from conductor.cluster.hashring import HashRing
from conductor.cluster.ring import RingManager
from conductor.db.conductors import ConductorRow

NODES = [str(uuid.UUID(int=i * 7919 + 1)) for i in range(6000)]
NAMES = [f"conductor-{i}" for i in range(6)]


def mapping(ring: HashRing) -> dict[str, str | None]:
    return {node: ring.conductor_for(node) for node in NODES}


def test_every_conductor_gets_a_share():
    counts: dict[str | None, int] = {}
    for owner in mapping(HashRing(NAMES)).values():
        counts[owner] = counts.get(owner, 0) + 1
    assert set(counts) == set(NAMES)
    share = len(NODES) / len(NAMES)
    print("nodes per conductor (32 points each):", sorted(counts.values()))
    assert all(share / 3 < count < share * 3 for count in counts.values())


@pytest.mark.parametrize("exponent", [5, 7])
def test_adding_one_conductor_moves_about_one_nth_and_only_to_it(exponent):
    before = mapping(HashRing(NAMES, exponent))
    after = mapping(HashRing(NAMES + ["newcomer"], exponent))
    moved = [node for node in NODES if before[node] != after[node]]
    assert moved and all(after[node] == "newcomer" for node in moved)
    fraction = len(moved) / len(NODES)
    print(f"exponent {exponent}: adding the 7th conductor moved {fraction:.3f} (1/7 = 0.143)")
    assert 1 / 7 / 3 < fraction < 1 / 7 * 3


def test_removing_one_conductor_moves_only_its_nodes():
    before = mapping(HashRing(NAMES))
    after = mapping(HashRing(NAMES[:-1]))
    moved = {node for node in NODES if before[node] != after[node]}
    assert moved == {node for node in NODES if before[node] == NAMES[-1]}
    assert NAMES[-1] not in after.values()


def test_the_mapping_depends_on_names_not_on_order_or_process():
    assert mapping(HashRing(NAMES)) == mapping(HashRing(reversed(NAMES)))
    # md5 of the name, fed 32 times, as tooz: a fixed answer for a fixed key
    assert HashRing(["a", "b", "c"]).conductor_for(NODES[0]) == \
        HashRing(["c", "a", "b"]).conductor_for(NODES[0])


def test_replicas_are_distinct_primary_first_and_bounded():
    ring = HashRing(NAMES)
    for node in NODES[:200]:
        three = ring.conductors_for(node, replicas=3)
        assert len(set(three)) == 3 and three[0] == ring.conductor_for(node)
    assert len(HashRing(["only"]).conductors_for(NODES[0], replicas=5)) == 1
    assert HashRing([]).conductors_for(NODES[0]) == []
    assert HashRing([]).conductor_for(NODES[0]) is None
    with pytest.raises(ValueError):
        HashRing(NAMES, 17)


# -- the ring cache over conductor rows ------------------------------------------
class Rows:
    """The live conductors as the table would return them; counts the reads."""

    def __init__(self, *rows):
        self.rows = list(rows)
        self.reads = 0

    def alive(self, stale_before):
        self.reads += 1
        return list(self.rows)


def row(name, group="", types=("fake-hardware",)):
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    return ConductorRow(1, name, group, True, list(types), now, now)


class Node:
    def __init__(self, uuid_, group="", driver="fake-hardware"):
        self.uuid, self.conductor_group, self.driver = uuid_, group, driver


def manager(rows, **options):
    clock = [0.0]
    settings = config.from_options({f"conductor.{k}": v for k, v in options.items()})
    ring = RingManager(rows, settings.conductor, monotonic=lambda: clock[0])
    return ring, clock


def test_nodes_of_other_groups_never_move_when_a_group_changes():
    rows = Rows(*[row(n) for n in NAMES], row("rack-a1", "rack-a"), row("rack-a2", "rack-a"))
    ring, _ = manager(rows)
    default = {n: ring.conductor_for(Node(n)) for n in NODES[:2000]}
    racked = {n: ring.conductor_for(Node(n, "rack-a")) for n in NODES[:2000]}
    assert set(racked.values()) == {"rack-a1", "rack-a2"}
    assert set(default.values()) == set(NAMES)
    rows.rows.append(row("rack-a3", "rack-a"))
    rows.rows = [r for r in rows.rows if r.hostname != "rack-a1"]
    ring.invalidate()
    assert {n: ring.conductor_for(Node(n)) for n in NODES[:2000]} == default
    assert set(ring.conductor_for(Node(n, "rack-a")) for n in NODES[:2000]) == {
        "rack-a2", "rack-a3"}


def test_a_conductor_serves_only_its_hardware_types():
    ring, _ = manager(Rows(row("ipmi-only", types=("ipmi",)), row("fake-only")))
    assert {ring.conductor_for(Node(n, driver="ipmi")) for n in NODES[:300]} == {"ipmi-only"}
    assert {ring.conductor_for(Node(n)) for n in NODES[:300]} == {"fake-only"}


def test_a_group_without_live_conductors_is_no_valid_host():
    ring, _ = manager(Rows(row("c1")))
    with pytest.raises(errors.NoValidHost) as caught:
        ring.conductor_for(Node(NODES[0], "empty-rack"))
    assert caught.value.status_code == 400
    assert "empty-rack" in str(caught.value) and "conductor_group" in str(caught.value)
    assert ring.conductor_or_none(Node(NODES[0], "empty-rack")) is None
    with pytest.raises(errors.NoValidHost):
        ring.conductor_for(Node(NODES[0], driver="redfish"))


def test_the_ring_is_rebuilt_after_the_reset_interval_or_on_invalidate_only():
    rows = Rows(row("c1"))
    ring, clock = manager(rows, hash_ring_reset_interval=15)
    for node in NODES[:100]:
        ring.conductor_for(Node(node))
    assert rows.reads == 1
    rows.rows.append(row("c2"))
    clock[0] = 14.9
    assert {ring.conductor_for(Node(n)) for n in NODES[:100]} == {"c1"}
    clock[0] = 15.0
    assert {ring.conductor_for(Node(n)) for n in NODES[:100]} == {"c1", "c2"}
    assert rows.reads == 2
    rows.rows.pop()
    ring.invalidate()
    assert {ring.conductor_for(Node(n)) for n in NODES[:100]} == {"c1"}
    assert rows.reads == 3


def test_a_missing_ring_rebuilds_at_once_but_at_most_once_a_second():
    rows = Rows(row("c1"))
    ring, clock = manager(rows)
    ring.conductor_for(Node(NODES[0]))
    rows.rows.append(row("r1", "rack"))       # registered after the ring was built
    clock[0] = 0.5
    assert ring.conductor_or_none(Node(NODES[0], "rack")) is None
    clock[0] = 1.0
    assert ring.conductor_for(Node(NODES[0], "rack")) == "r1"
    reads = rows.reads
    for node in NODES[:500]:                 # a page of nodes of an empty group
        ring.conductor_or_none(Node(node, "nobody"))
    assert rows.reads == reads
