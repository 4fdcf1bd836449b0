"""NetbootServices without boot servers: URLs the configs carry, settings checks (the
servers on free ports: tests/integration/conductor/netboot/test_services.py)."""
import pytest

from conductor import errors
from conductor.config import from_options
from conductor.netboot.services import NetbootServices


def settings(tmp_path, options: dict | None = None):
    return from_options({"data_dir": str(tmp_path / "data"), "pxe.enabled": False,
                         **(options or {})})


def test_explicit_urls_win(tmp_path):
    services = NetbootServices(settings(tmp_path, {
        "api.host": "0.0.0.0", "api.auth_strategy": "http_basic",
        "pxe.api_url": "http://10.0.0.1:6385", "pxe.http_url": "http://10.0.0.1:8080/boot/"}))
    services.start(api_url="http://0.0.0.0:6385")
    assert services.api_url == "http://10.0.0.1:6385"
    assert services.http_url == "http://10.0.0.1:8080/boot"


@pytest.mark.parametrize("values, match", [
    ({"pxe.default_boot_mode": "efi"}, "default_boot_mode"),
    ({"pxe.http_url": "http://h/${x}"}, "http_url"),
    ({"pxe.api_url": "ftp://h/"}, "api_url"),
])
def test_bad_settings_stop_start(tmp_path, values, match):
    with pytest.raises((errors.ConfigError, errors.InvalidParameter), match=match):
        NetbootServices(settings(tmp_path, values)).start()


