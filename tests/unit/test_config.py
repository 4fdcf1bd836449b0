"""Settings: defaults, file, environment, flags, and the loopback rule."""
import pytest

from conductor import config, errors


def test_precedence_file_env_flags(tmp_path):
    conf = tmp_path / "m.conf"
    conf.write_text("[api]\nport = 7000\nhost = 127.0.0.2\n[conductor]\nworkers = 3\n")
    env = {"METALCAST_PORT": "7001", "METALCAST_CONDUCTOR_WORKERS": "5"}
    settings = config.load(str(conf), {"api_port": 7002}, env=env)
    assert settings.api_port == 7002            # flag beats env beats file
    assert settings.conductor_workers == 5      # env beats file
    assert settings.api_host == "127.0.0.2"     # file beats default


def test_data_dir_config_file_is_found(tmp_path):
    (tmp_path / "metalcast.conf").write_text("[conductor]\nmax_concurrent_deploy = 7\n")
    settings = config.load(overrides={"data_dir": str(tmp_path)}, env={})
    assert settings.conductor_max_concurrent_deploy == 7
    assert settings.db_url == f"sqlite:///{tmp_path}/metalcast.sqlite"


@pytest.mark.parametrize("text,message", [
    ("[api]\nbogus = 1\n", "unknown option"),
    ("[api]\nport = eighty\n", "integer"),
    ("[database]\nauto_upgrade = maybe\n", "boolean"),
])
def test_bad_config_file(tmp_path, text, message):
    conf = tmp_path / "m.conf"
    conf.write_text(text)
    with pytest.raises(errors.ConfigError, match=message):
        config.load(str(conf), env={})


def test_missing_config_file():
    with pytest.raises(errors.ConfigError, match="does not exist"):
        config.load("/nonexistent/metalcast.conf", env={})


@pytest.mark.parametrize("host", ["0.0.0.0", "10.0.0.5", "::", "example.org"])
def test_no_auth_refused_beyond_loopback(host):
    with pytest.raises(errors.ConfigError, match="without authentication"):
        config.Settings(api_host=host).check()


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "127.1.2.3"])
def test_no_auth_allowed_on_loopback(host):
    config.Settings(api_host=host).check()


def test_http_basic_needs_htpasswd(tmp_path):
    settings = config.Settings(api_host="0.0.0.0", api_auth_strategy="http_basic",
                               api_htpasswd_file=str(tmp_path / "missing"))
    with pytest.raises(errors.ConfigError, match="htpasswd"):
        settings.check()
    (tmp_path / "missing").write_text("")
    settings.check()
