"""The owner index of the DHCP host entries: a node's entries found without reading
every host file, shared by the conductors that share the hostsdir."""
from conductor.netboot import dhcp

NODE = "8b1c4c38-8c68-4f7a-9f5e-3a2b1c0d9e8f"
OTHER = "0f3d2c1b-aaaa-4bbb-8ccc-123456789abc"
MAC1, MAC2, MAC3 = "52:54:00:12:34:56", "52:54:00:12:34:57", "52:54:00:12:34:58"


def provider(tmp_path):
    made = dhcp.HostsDirDhcp(tmp_path / "hosts.d", tmp_path / "opts.d")
    made.validate()
    return made


def test_entries_written_before_the_index_are_found_after_it_is_built(tmp_path):
    old = dhcp.HostsDirDhcp(tmp_path / "hosts.d", tmp_path / "opts.d")
    old.update(NODE, [MAC1, MAC2])                  # no index yet: an older version
    assert not (tmp_path / "owners.d").exists()
    new = provider(tmp_path)
    assert sorted(p.name for p in (tmp_path / "owners.d" / NODE).iterdir()) == [
        "52-54-00-12-34-56", "52-54-00-12-34-57"]
    new.update(NODE, [MAC1])                        # MAC2 is stale: released
    assert new.entries()[MAC2] == f"{MAC2},set:metalcast-released"
    new.remove(NODE)
    assert set(new.entries().values()) == {f"{m},set:metalcast-released" for m in (MAC1, MAC2)}
    assert not (tmp_path / "owners.d" / NODE).exists()


def test_another_conductors_entries_are_seen_through_the_shared_index(tmp_path):
    first, second = provider(tmp_path), provider(tmp_path)
    first.update(NODE, [MAC1, MAC2])
    second.update(NODE, [MAC2])                     # taken over: MAC1 is gone
    assert second.entries()[MAC1] == f"{MAC1},set:metalcast-released"
    assert second.entries()[MAC2] == f"{MAC2},set:metalcast"


def test_a_mac_given_to_another_node_is_not_the_old_nodes_any_more(tmp_path):
    hosts = provider(tmp_path)
    hosts.update(NODE, [MAC1, MAC3])
    hosts.update(OTHER, [MAC1])                     # written over, old marker left
    hosts.remove(NODE)                              # must not release OTHER's MAC1
    assert hosts.entries()[MAC1] == f"{MAC1},set:metalcast"
    assert hosts.entries()[MAC3] == f"{MAC3},set:metalcast-released"
    assert not (tmp_path / "owners.d" / NODE).exists()   # the stale marker dropped
    assert [p.name for p in (tmp_path / "owners.d" / OTHER).iterdir()] == [
        "52-54-00-12-34-56"]


def test_the_index_is_built_once(tmp_path):
    provider(tmp_path).update(NODE, [MAC1])
    (tmp_path / "owners.d" / NODE / "52-54-00-12-34-56").unlink()
    provider(tmp_path)                              # exists: not rebuilt from a scan
    assert not (tmp_path / "owners.d" / NODE / "52-54-00-12-34-56").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".owners-")]
