"""NetbootServices with the boot servers on: they start on free ports, the configs carry
their URLs, and a bad setting or template stops start with nothing left listening (the
settings checks without servers: tests/unit/conductor/netboot/test_services.py)."""
import pytest

from conductor import errors
from conductor.drivers.boot import pxe
from conductor.drivers.context import DriverContext
from conductor.netboot.services import NetbootServices
from tests.unit.conductor.netboot.test_services import settings


def test_urls_default_to_where_the_servers_listen(tmp_path):
    services = NetbootServices(settings(tmp_path, {"pxe.enabled": True, "pxe.tftp_port": 0,
                                                   "pxe.http_port": 0}))
    try:
        lines = services.start(api_url="http://127.0.0.1:41234")
        assert services.api_url == "http://127.0.0.1:41234"
        assert services.http_url == f"http://127.0.0.1:{services.http.port}"
        assert services.http.port != 0 and services.tftp.port != 0
        assert lines == [
            f"metalcast TFTP boot server on tftp://127.0.0.1:{services.tftp.port}/ "
            f"(root {tmp_path / 'data' / 'tftpboot'})",
            f"metalcast HTTP boot server on {services.http_url}/ (root "
            f"{tmp_path / 'data' / 'httpboot'}, boot URL {services.http_url}/boot.ipxe)"]
        assert services.start() == lines  # idempotent
        assert f"{services.http_url}/ipxe/" in (tmp_path / "data" / "tftpboot" /
                                                "boot.ipxe").read_text()
    finally:
        services.stop()
    assert services.http is None and services.tftp is None


def test_unreachable_listen_address_needs_explicit_urls(tmp_path):
    wildcard = {"api.host": "0.0.0.0", "api.auth_strategy": "http_basic"}
    with pytest.raises(errors.ConfigError, match=r"set \[pxe\] api_url"):
        NetbootServices(settings(tmp_path, {"pxe.enabled": True, "pxe.tftp_port": 0,
                                            "pxe.http_port": 0, **wildcard})).start()
    # Boot servers off: serve still starts; pxe/ipxe nodes then get the same message.
    config = settings(tmp_path, {"pxe.deploy_kernel": "http://k/k",
                                 "pxe.deploy_ramdisk": "http://k/r", **wildcard})
    services = NetbootServices(config)
    assert services.start() == []
    ctx = DriverContext.create(config, netboot=services)
    with pytest.raises(errors.ConfigError, match=r"set \[pxe\] api_url"):
        pxe.IPXEBoot(ctx).validate(task=None)


@pytest.mark.parametrize("enabled", [True, False])
def test_broken_template_stops_start_even_without_boot_servers(tmp_path, monkeypatch, enabled):
    from conductor.netboot import render
    broken = tmp_path / "templates"
    broken.mkdir()
    for path in render.TEMPLATE_DIR.glob("*.j2"):
        (broken / path.name).write_text(path.read_text())
    (broken / "grub.cfg.j2").write_text("linux {{ kernel }} {% endif %}\n")
    monkeypatch.setattr(render.Renderer.__init__, "__defaults__", (broken,))
    services = NetbootServices(settings(tmp_path, {"pxe.enabled": enabled, "pxe.tftp_port": 0,
                                                   "pxe.http_port": 0}))
    with pytest.raises(errors.ConfigError, match="grub.cfg.j2 line 1"):
        services.start()
    assert services.http is None and services.tftp is None  # nothing left listening
