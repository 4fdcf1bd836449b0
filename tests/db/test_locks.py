"""The per-node lock: exclusive, race-free, and released only by its holder."""
from __future__ import annotations

import threading

import pytest

from conductor import errors


def test_second_reserve_is_refused_with_node_locked(store, make_node):
    node = make_node(name="n")
    store.reserve(node, "host-a")
    for host in ("host-b", "host-a"):  # not re-entrant either
        with pytest.raises(errors.NodeLocked) as exc:
            store.reserve(node, host)
        assert exc.value.status_code == 409
        assert "host-a" in str(exc.value) and node.uuid in str(exc.value)
    assert store.get_node(node.uuid).reservation == "host-a"


def test_reserve_writes_values_with_the_lock(store, make_node):
    node = make_node(name="n", provision_state="available")
    store.reserve(node, "host-a", values={"provision_state": "deploying"},
                  expect={"provision_state": "available"})
    current = store.get_node(node.uuid)
    assert (current.reservation, current.provision_state) == ("host-a", "deploying")


def test_reserve_on_changed_state_is_a_conflict_not_a_lock(store, make_node):
    node = make_node(name="n", provision_state="active")
    with pytest.raises(errors.Conflict) as exc:
        store.reserve(node, "host-a", values={"provision_state": "deploying"},
                      expect={"provision_state": "available"})
    assert not isinstance(exc.value, errors.NodeLocked)
    assert exc.value.status_code == 409
    current = store.get_node(node.uuid)
    assert (current.reservation, current.provision_state) == (None, "active")


@pytest.mark.parametrize("round_", range(3))
def test_concurrent_reserves_have_exactly_one_winner(store, make_node, round_):
    node = make_node(name=f"contended-{round_}")
    contenders = 8
    start = threading.Barrier(contenders)
    results: dict[str, object] = {}

    def contend(host):
        start.wait()
        try:
            store.reserve(node, host)
            results[host] = "won"
        except Exception as exc:  # noqa: BLE001 - the test inspects every outcome
            results[host] = exc

    threads = [threading.Thread(target=contend, args=(f"host-{i}",))
               for i in range(contenders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    winners = [h for h, r in results.items() if r == "won"]
    losers = [r for r in results.values() if r != "won"]
    assert len(results) == contenders
    assert len(winners) == 1, results
    assert all(isinstance(r, errors.NodeLocked) for r in losers), losers
    assert store.get_node(node.uuid).reservation == winners[0]


def test_only_the_holder_releases(store, make_node):
    node = make_node(name="n")
    store.reserve(node, "host-a")
    assert store.release(node.id, "host-b") is False
    assert store.get_node(node.uuid).reservation == "host-a"
    assert store.release(node.id, "host-a") is True
    assert store.get_node(node.uuid).reservation is None
    assert store.release(node.id, "host-a") is False
    store.reserve(node, "host-b")
    assert store.get_node(node.uuid).reservation == "host-b"


def test_release_all_drops_only_that_hosts_locks(store, make_node):
    mine = [make_node(name=f"mine-{i}") for i in range(2)]
    theirs = make_node(name="theirs")
    for node in mine:
        store.reserve(node, "host-a")
    store.reserve(theirs, "host-b")
    assert sorted(store.release_all("host-a")) == sorted(n.uuid for n in mine)
    assert [store.get_node(n.uuid).reservation for n in mine] == [None, None]
    assert store.get_node("theirs").reservation == "host-b"
