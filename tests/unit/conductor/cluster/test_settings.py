"""The membership and ring options: Ironic's [DEFAULT] spellings, defaults, bounds."""
import pytest

from conductor import config, errors


def _load(tmp_path, text):
    path = tmp_path / "m.conf"
    path.write_text(text)
    return config.load(str(path), env={})


def test_ironic_defaults():
    cond = config.Settings().conductor
    assert (cond.heartbeat_interval, cond.heartbeat_timeout) == (10, 60)
    assert (cond.hash_partition_exponent, cond.hash_distribution_replicas) == (5, 1)
    assert cond.hash_ring_reset_interval == 15 and cond.conductor_group == ""
    assert cond.host                                  # the machine's hostname


def test_default_host_and_hash_options_are_read_where_ironic_has_them(tmp_path):
    settings = _load(tmp_path, "[DEFAULT]\nhost = cond-7\nhash_partition_exponent = 6\n"
                               "hash_ring_reset_interval = 2.5\n"
                               "[conductor]\nconductor_group = rack-1\n"
                               "[api]\nport = 7001\n")
    cond = settings.conductor
    assert (cond.host, cond.conductor_group, cond.hash_partition_exponent) == (
        "cond-7", "rack-1", 6)
    assert cond.hash_ring_reset_interval == 2.5
    assert settings.api.host == "127.0.0.1"          # [DEFAULT] host is not the API's
    assert config.from_options({"host": "flag-name"}).conductor.host == "flag-name"


def test_the_conductor_section_wins_over_default(tmp_path):
    settings = _load(tmp_path, "[DEFAULT]\nhost = from-default\n"
                               "[conductor]\nhost = from-section\n")
    assert settings.conductor.host == "from-section"


def test_a_section_may_set_a_key_default_also_sets(tmp_path):
    settings = _load(tmp_path, "[DEFAULT]\nhost = cond-1\n[api]\nhost = 127.0.0.2\n")
    assert (settings.conductor.host, settings.api.host) == ("cond-1", "127.0.0.2")


def test_the_api_host_shortcut_does_not_rename_the_conductor():
    settings = config.load(env={"METALCAST_HOST": "::1"})
    assert settings.api.host == "::1" and settings.conductor.host != "::1"


@pytest.mark.parametrize("options, words", [
    ({"conductor.host": ""}, "[DEFAULT] host"),
    ({"conductor.host": " padded "}, "[DEFAULT] host"),
    ({"conductor.host": "x" * 256}, "[DEFAULT] host"),
    ({"conductor.host": "bad\nname"}, "[DEFAULT] host"),
    ({"conductor.conductor_group": "tab\there"}, "conductor_group"),
    ({"conductor.heartbeat_interval": 0}, "heartbeat_interval"),
    ({"conductor.heartbeat_interval": 60}, "below heartbeat_timeout"),
    ({"conductor.hash_partition_exponent": 17}, "hash_partition_exponent"),
    ({"conductor.hash_distribution_replicas": 0}, "hash_distribution_replicas"),
    ({"conductor.hash_ring_reset_interval": 0}, "hash_ring_reset_interval"),
])
def test_bad_values_are_refused_naming_the_option(options, words):
    with pytest.raises(errors.ConfigError) as caught:
        config.from_options(options).check()
    assert words in str(caught.value)
