"""Settings: defaults, file, environment, flags, typed values, and the loopback rule."""
import dataclasses
import logging
import os
import re
from pathlib import Path

import pytest

from conductor import config, errors
from conductor.drivers.deploy.clean import PRIORITY_OVERRIDES
from conductor.engine.workers import WAIT_TIMEOUTS
from conductor.service.facade import CONCURRENCY_LIMITS

README = Path(__file__).resolve().parents[3] / "README.md"
#: Ironic options the README quotes for comparison; metalcast has no such option.
IRONIC_ONLY = {("agent", "allow_md5_checksum")}


def _conf(tmp_path, text: str) -> str:
    path = tmp_path / "m.conf"
    path.write_text(text)
    return str(path)


def test_sections_are_attributes_with_the_documented_defaults():
    settings = config.Settings()
    assert (settings.api.host, settings.api.port) == ("127.0.0.1", 6385)
    assert settings.conductor.workers == 16
    assert settings.pxe.tftp_root == "" and settings.dhcp.mode == "none"
    assert settings.conductor.hardware_types == ["fake-hardware", "ipmi", "redfish"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.api.port = 1


def test_precedence_file_env_flags(tmp_path):
    conf = _conf(tmp_path, "[api]\nport = 7000\nhost = 127.0.0.2\n[conductor]\nworkers = 3\n")
    env = {"METALCAST_PORT": "7001", "METALCAST_CONDUCTOR_WORKERS": "5"}
    settings = config.load(conf, {"api.port": 7002}, env=env)
    assert settings.api.port == 7002            # flag beats env beats file
    assert settings.conductor.workers == 5      # env beats file
    assert settings.api.host == "127.0.0.2"     # file beats default


def test_data_dir_config_file_is_found(tmp_path):
    (tmp_path / "metalcast.conf").write_text("[conductor]\nmax_concurrent_deploy = 7\n")
    settings = config.load(overrides={"data_dir": str(tmp_path)}, env={})
    assert settings.conductor.max_concurrent_deploy == 7
    assert settings.db_url == f"sqlite:///{tmp_path}/metalcast.sqlite"


def test_config_file_from_the_environment(tmp_path):
    conf = _conf(tmp_path, "[DEFAULT]\ndata_dir = /srv/mc\n[pxe]\nenabled = off\n")
    settings = config.load(env={"METALCAST_CONFIG": conf})
    assert settings.data_dir == "/srv/mc" and settings.pxe.enabled is False


# -- conversion by declared type ------------------------------------------------

@pytest.mark.parametrize("raw", ["1", "true", "True", "YES", "on", " yes "])
def test_boolean_spellings_true(tmp_path, raw):
    settings = config.load(_conf(tmp_path, f"[dhcp]\nlog_dhcp = {raw}\n"), env={})
    assert settings.dhcp.log_dhcp is True


@pytest.mark.parametrize("raw", ["0", "false", "False", "NO", "off"])
def test_boolean_spellings_false(raw):
    settings = config.load(env={"METALCAST_DATABASE_AUTO_UPGRADE": raw})
    assert settings.database.auto_upgrade is False


def test_numbers_and_strings_are_converted(tmp_path):
    conf = _conf(tmp_path, "[conductor]\nworkers = 4\nsync_power_state_interval = 90\n"
                           "[redfish]\npower_poll_interval = 0.25\n[api]\nhost = ::1\n"
                           "[pxe]\nkernel_append_params = console=ttyS0 42\n")
    settings = config.load(conf, env={})
    assert settings.conductor.workers == 4 and type(settings.conductor.workers) is int
    assert settings.conductor.sync_power_state_interval == 90.0
    assert type(settings.conductor.sync_power_state_interval) is float
    assert settings.redfish.power_poll_interval == 0.25
    assert settings.api.host == "::1"
    assert settings.pxe.kernel_append_params == "console=ttyS0 42"


@pytest.mark.parametrize("text,message", [
    ("[conductor]\nworkers = many\n", "[conductor] workers: expected an integer, got 'many'"),
    ("[api]\nport = eighty\n", "[api] port: expected an integer, got 'eighty'"),
    ("[api]\nport = 80.5\n", "[api] port: expected an integer, got '80.5'"),
    ("[dns]\ntimeout = soon\n", "[dns] timeout: expected a number, got 'soon'"),
    ("[database]\nauto_upgrade = maybe\n",
     "[database] auto_upgrade: expected a boolean (true/false, yes/no, on/off, 1/0), "
     "got 'maybe'"),
    ("[api]\nbogus = 1\n", "unknown option [api] bogus"),
    ("[bogus]\nkey = 1\n", "unknown section [bogus] key"),
    ("[DEFAULT]\nbogus = 1\n", "unknown option [DEFAULT] bogus"),
])
def test_bad_config_file(tmp_path, text, message):
    conf = _conf(tmp_path, text)
    with pytest.raises(errors.ConfigError) as info:
        config.load(conf, env={})
    assert str(info.value) == f"Configuration error: {conf}: {message}"


def test_unparsable_config_file(tmp_path):
    conf = _conf(tmp_path, "[api\nport = 1\n")
    with pytest.raises(errors.ConfigError, match="no section headers"):
        config.load(conf, env={})


def test_missing_config_file():
    with pytest.raises(errors.ConfigError, match="does not exist"):
        config.load("/nonexistent/metalcast.conf", env={})


# -- environment ----------------------------------------------------------------

def test_every_option_has_its_environment_variable():
    assert config.env_var("dns", "tsig_secret") == "METALCAST_DNS_TSIG_SECRET"
    assert config.env_var("DEFAULT", "data_dir") == "METALCAST_DATA_DIR"
    settings = config.load(env={"METALCAST_DNS_TSIG_SECRET": "c2VjcmV0",
                                "METALCAST_PXE_TFTP_ROOT": "/srv/tftp",
                                "METALCAST_IPMI_MIN_COMMAND_INTERVAL": "0.5"})
    assert settings.dns.tsig_secret == "c2VjcmV0"
    assert "c2VjcmV0" not in repr(settings)
    assert settings.pxe.tftp_root == "/srv/tftp"
    assert settings.ipmi.min_command_interval == 0.5


def test_aliases(tmp_path):
    (tmp_path / "metalcast.conf").write_text("[conductor]\nworkers = 2\n")
    settings = config.load(env={"METALCAST_HOST": "::1", "METALCAST_PORT": "7100",
                                "METALCAST_DATA_DIR": str(tmp_path)})
    assert (settings.api.host, settings.api.port) == ("::1", 7100)
    assert settings.data_dir == str(tmp_path)
    assert settings.conductor.workers == 2          # the alias found the data dir's file


def test_full_names_beat_aliases():
    settings = config.load(env={"METALCAST_PORT": "7100", "METALCAST_API_PORT": "7200"})
    assert settings.api.port == 7200


def test_bad_environment_value_names_the_variable():
    with pytest.raises(errors.ConfigError) as info:
        config.load(env={"METALCAST_CONDUCTOR_WORKERS": "many"})
    assert str(info.value) == ("Configuration error: $METALCAST_CONDUCTOR_WORKERS: "
                               "[conductor] workers: expected an integer, got 'many'")
    with pytest.raises(errors.ConfigError, match=r"\$METALCAST_PORT: \[api\] port: expected"):
        config.load(env={"METALCAST_PORT": "http"})


def test_unrelated_environment_is_ignored():
    settings = config.load(env={"METALCAST_CACHE": "/tmp/c", "METALCAST_API_BOGUS": "1"})
    assert settings == config.Settings()


# -- overrides (flags) and from_options -----------------------------------------

def test_overrides_are_section_qualified_and_none_is_unset(tmp_path):
    conf = _conf(tmp_path, "[api]\nhost = 127.0.0.3\n")
    settings = config.load(conf, {"api.host": None, "api.port": "7300",
                                  "data_dir": str(tmp_path)}, env={})
    assert settings.api.host == "127.0.0.3"
    assert settings.api.port == 7300
    assert settings.data_dir == str(tmp_path)


@pytest.mark.parametrize("options,message", [
    ({"api.port": 1.5}, "[api] port: expected an integer, got 1.5"),
    ({"api.port": True}, "[api] port: expected an integer, got True"),
    ({"pxe.enabled": "sometimes"}, "[pxe] enabled: expected a boolean"),
    ({"api.host": 127}, "[api] host: expected a string, got 127"),
    ({"api.hots": "x"}, "unknown option [api] hots"),
    ({"apis.host": "x"}, "unknown section [apis] host"),
    ({"api_host": "x"}, "unknown option [DEFAULT] api_host"),
    ({"api.hots": None}, "unknown option [api] hots"),
])
def test_bad_overrides(options, message):
    with pytest.raises(errors.ConfigError) as info:
        config.load(overrides=options, env={})
    assert message in str(info.value)


def test_from_options_reads_no_file_and_no_environment(tmp_path, monkeypatch):
    (tmp_path / "metalcast.conf").write_text("[conductor]\nworkers = 2\n")
    monkeypatch.setenv("METALCAST_CONDUCTOR_WORKERS", "3")
    settings = config.from_options({"data_dir": str(tmp_path), "conductor.host": "h",
                                    "dns.timeout": 2})
    assert settings.conductor.workers == 16
    assert settings.conductor.host == "h"
    assert settings.dns.timeout == 2.0 and type(settings.dns.timeout) is float


def test_from_options_on_a_base_keeps_the_rest():
    base = config.from_options({"conductor.host": "h", "conductor.workers": 3})
    changed = config.from_options({"conductor.workers": 4}, base)
    assert (changed.conductor.host, changed.conductor.workers) == ("h", 4)
    assert (base.conductor.host, base.conductor.workers) == ("h", 3)


# -- names other modules and the README use -------------------------------------

def test_option_tables_name_real_options():
    for key in WAIT_TIMEOUTS.values():
        assert ("conductor", key) in config.OPTION_TYPES
    for key, _, _ in CONCURRENCY_LIMITS.values():
        assert ("conductor", key) in config.OPTION_TYPES
    for key in PRIORITY_OVERRIDES.values():
        assert ("deploy", key) in config.OPTION_TYPES


def test_readme_names_only_real_options():
    text = README.read_text()
    named = set(re.findall(r"`\[(\w+)\] (\w+)", text))
    for block in re.findall(r"```ini\n(.*?)```", text, re.S):
        section = None
        for line in block.splitlines():
            header = re.match(r"\[(\w+)\]", line)
            section = header.group(1) if header else section
            key = re.match(r"(\w+)\s*=", line)
            if key:
                named.add((section, key.group(1)))
    spellings = {("DEFAULT", key) for key in config.DEFAULT_ALIASES}   # Ironic's [DEFAULT]
    assert named and named - IRONIC_ONLY <= set(config.OPTION_TYPES) | spellings


# -- check() --------------------------------------------------------------------

@pytest.mark.parametrize("host", ["0.0.0.0", "10.0.0.5", "::", "example.org"])
def test_no_auth_refused_beyond_loopback(host):
    with pytest.raises(errors.ConfigError, match="without authentication"):
        config.from_options({"api.host": host}).check()


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "127.1.2.3"])
def test_no_auth_allowed_on_loopback(host):
    settings = config.from_options({"api.host": host})
    assert config.is_loopback(host)
    assert settings.check() is None     # no ConfigError: serving without auth is allowed


def test_http_basic_needs_htpasswd(tmp_path):
    settings = config.from_options({"api.host": "0.0.0.0", "api.auth_strategy": "http_basic",
                                    "api.htpasswd_file": str(tmp_path / "missing")})
    with pytest.raises(errors.ConfigError, match="htpasswd"):
        settings.check()
    (tmp_path / "missing").write_text("")
    settings.check()


def test_the_patching_listener_is_starlingx_s_local_api_by_default():
    patching = config.Settings().patching
    assert (patching.listen_host, patching.listen_port) == ("127.0.0.1", 5487)


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.7", "::"])
def test_the_patching_listener_follows_the_api_s_auth_rule(tmp_path, host):
    with pytest.raises(errors.ConfigError, match="patch API without authentication on"):
        config.from_options({"patching.listen_host": host}).check()
    config.from_options({"patching.listen_host": host, "patching.listen_port": 0}).check()
    config.from_options({"patching.listen_host": host, "patching.enabled": False}).check()
    (tmp_path / "htpasswd").write_text("")
    config.from_options({"patching.listen_host": host, "api.auth_strategy": "http_basic",
                         "api.htpasswd_file": str(tmp_path / "htpasswd")}).check()


@pytest.mark.parametrize("port", [-1, 65536])
def test_the_patching_listen_port_is_a_port_or_zero(port):
    with pytest.raises(errors.ConfigError, match="patching.listen_port must be a TCP port"):
        config.from_options({"patching.listen_port": port}).check()


@pytest.mark.parametrize("key", ["max_request_body_size", "max_connections",
                                 "max_connections_per_client", "header_timeout",
                                 "auth_max_concurrent_checks", "auth_checks_per_client",
                                 "auth_failures_before_backoff", "auth_max_backoff"])
def test_api_bounds_must_be_positive(key):
    assert getattr(config.Settings().api, key) > 0
    with pytest.raises(errors.ConfigError, match=f"api.{key} must be greater than 0"):
        config.from_options({f"api.{key}": 0}).check()


def test_identity_defaults_and_expiration_check():
    identity = config.Settings().identity
    assert (identity.token_expiration, identity.region, identity.project_names) == \
        (3600, "RegionOne", ["admin"])
    assert config.from_options({"identity.projects": "admin, demo,"}).identity \
        .project_names == ["admin", "demo"]
    with pytest.raises(errors.ConfigError, match="token_expiration"):
        config.from_options({"identity.token_expiration": 0}).check()


# -- the data dir ------------------------------------------------------------------

def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o7777


@pytest.fixture
def open_umask():
    previous = os.umask(0)
    yield
    os.umask(previous)


def test_data_dir_is_created_private_whatever_the_umask(tmp_path, open_umask, caplog):
    settings = config.from_options({"data_dir": str(tmp_path / "a" / "data")})
    assert settings.make_data_dir() == tmp_path / "a" / "data"
    assert _mode(tmp_path / "a" / "data") == 0o700
    assert not caplog.records                   # a new dir: nothing to warn about


def test_a_loose_data_dir_is_restricted_with_a_warning(tmp_path, caplog):
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    settings = config.from_options({"data_dir": str(data)})
    with caplog.at_level(logging.WARNING, logger="conductor.config"):
        settings.make_data_dir()
    assert _mode(data) == 0o700
    assert "accessible by other users (mode 0755)" in caplog.text


def test_a_data_dir_that_cannot_be_made_is_a_config_error(tmp_path):
    (tmp_path / "file").write_text("")
    settings = config.from_options({"data_dir": str(tmp_path / "file" / "data")})
    with pytest.raises(errors.ConfigError, match="cannot create or restrict the data dir"):
        settings.make_data_dir()


@pytest.mark.parametrize("hostsdir, warned", [("", True), ("{data}/dhcp/mine", True),
                                              ("{tmp}/elsewhere", False)])
def test_hostsdir_mode_warns_when_the_external_dnsmasq_cannot_read_it(
        tmp_path, caplog, hostsdir, warned):
    data = tmp_path / "data"
    settings = config.from_options({
        "data_dir": str(data), "dhcp.mode": "hostsdir",
        "dhcp.hostsdir": hostsdir.format(data=data, tmp=tmp_path)})
    with caplog.at_level(logging.WARNING, logger="conductor.config"):
        settings.make_data_dir()
    assert ("a dnsmasq running as another user cannot read it" in caplog.text) is warned
