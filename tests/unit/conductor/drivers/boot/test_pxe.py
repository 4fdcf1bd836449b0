"""The pxe and ipxe boot interfaces over a real SQLite store: which files each step
writes or removes, validation, boot mode, kernel command line and the DHCP hook."""
from __future__ import annotations

import dataclasses
import shutil

import pytest

from conductor import errors
from conductor.config import from_options
from conductor.db import migrate
from conductor.db.engine import make_engine
from conductor.db.queries import Store
from conductor.drivers import registry as hardware
from conductor.drivers.boot import pxe
from conductor.drivers.context import DriverContext
from conductor.drivers.registry import DriverRegistry
from conductor.engine.task import Task
from conductor.netboot.dhcp_options import BootServer
from conductor.netboot.services import NetbootServices

MACS = ("52:54:00:00:00:0a", "52:54:00:00:00:0b")


@pytest.fixture(scope="module")
def migrated(tmp_path_factory):
    """One migrated SQLite file; each test gets a copy (migrating costs ~0.5 s)."""
    path = tmp_path_factory.mktemp("db") / "db.sqlite"
    engine = make_engine(f"sqlite:///{path}")
    migrate.upgrade(engine)
    engine.dispose()
    return path


@pytest.fixture
def store(tmp_path, migrated):
    shutil.copyfile(migrated, tmp_path / "db.sqlite")
    return Store(make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}"))


@pytest.fixture
def context(tmp_path):
    settings = from_options({"data_dir": str(tmp_path / "data"), "pxe.enabled": False,
                             "api.port": 6385, "pxe.http_port": 8080,
                             "pxe.deploy_kernel": "agent.kernel",
                             "pxe.deploy_ramdisk": "agent.initramfs"})
    ctx = DriverContext.create(settings, netboot=NetbootServices(settings))
    root = settings.data_path / "httpboot"
    root.mkdir(parents=True)
    (root / "agent.kernel").write_bytes(b"kernel")
    (root / "agent.initramfs").write_bytes(b"initramfs")
    return ctx


def make_task(store, context, boot="ipxe", ports=MACS, no_pxe=(), **values):
    values.setdefault("name", "web-1")
    node = store.create_node(dict(driver="fake-hardware", boot_interface=boot,
                                  management_interface="fake", power_interface="fake",
                                  provision_state="deploying", **values))
    for mac in ports + no_pxe:
        store.create_port({"address": mac, "node_id": node.id, "pxe_enabled": mac in ports})
    return Task(store, node, "test-host", DriverRegistry(context))


def root(context, kind):
    return context.settings.data_path / f"{kind}boot"


def test_registered_for_every_type_and_default_for_real_ones(context):
    for hw_type in ("fake-hardware", "ipmi", "redfish"):
        boots = hardware.HARDWARE_TYPES[hw_type]["boot"]
        assert "pxe" in boots and "ipxe" in boots
    assert hardware.HARDWARE_TYPES["fake-hardware"]["boot"][0] == "fake"
    assert hardware.HARDWARE_TYPES["ipmi"]["boot"][0] == "ipxe"
    registry = DriverRegistry(context)
    assert isinstance(registry.build("boot", "ipxe"), pxe.IPXEBoot)
    assert isinstance(registry.build("boot", "pxe"), pxe.PXEBoot)


def test_ipxe_prepare_writes_each_mac_then_every_later_step_removes(store, context):
    task = make_task(store, context)
    task.boot.prepare_ramdisk(task)
    files = sorted(p.name for p in (root(context, "http") / "ipxe").iterdir())
    assert files == ["52-54-00-00-00-0a.ipxe", "52-54-00-00-00-0b.ipxe"]
    text = (root(context, "http") / "ipxe" / files[0]).read_text()
    assert "kernel --name kernel http://127.0.0.1:8080/agent.kernel initrd=ramdisk " \
           "ipa-api-url=http://127.0.0.1:6385 nofb vga=normal " \
           "BOOTIF=01-52-54-00-00-00-0a" in text
    for step in ("clean_up_ramdisk", "prepare_instance", "clean_up_instance"):
        task.boot.prepare_ramdisk(task)
        getattr(task.boot, step)(task)
        assert not list((root(context, "http") / "ipxe").iterdir()), step


def test_prepare_ramdisk_makes_the_next_boot_a_network_boot(store, context):
    """A node whose last deploy left "disk, persistent" must still PXE-boot the ramdisk."""
    task = make_task(store, context)
    task.management.set_boot_device(task, "disk", persistent=True)
    task.boot.prepare_ramdisk(task)
    assert task.management.get_boot_device(task) == {"boot_device": "pxe",
                                                      "persistent": False}


def test_pxe_bios_and_uefi(store, context):
    bios = make_task(store, context, boot="pxe", ports=(MACS[0],))
    bios.boot.prepare_ramdisk(bios)
    cfg = root(context, "tftp") / "pxelinux.cfg" / "01-52-54-00-00-00-0a"
    assert "KERNEL agent.kernel" in cfg.read_text()
    assert (root(context, "tftp") / "agent.kernel").read_bytes() == b"kernel"  # TFTP-readable
    uefi = make_task(store, context, boot="pxe", ports=(MACS[1],), name="uefi-1",
                     properties={"capabilities": "boot_mode:uefi,foo:bar"})
    uefi.boot.prepare_ramdisk(uefi)
    grub = root(context, "tftp") / "grub" / "grub.cfg-01-52-54-00-00-00-0b"
    assert "linux /agent.kernel ipa-api-url=" in grub.read_text()
    uefi.boot.clean_up_ramdisk(uefi)
    assert not grub.exists() and cfg.exists()


@pytest.mark.parametrize("values, expected", [
    ({}, "bios"),
    ({"boot_mode": "uefi"}, "uefi"),
    ({"properties": {"capabilities": "boot_mode:uefi"}}, "uefi"),
    ({"properties": {"capabilities": {"boot_mode": "uefi"}}}, "uefi"),
    ({"properties": {"capabilities": "boot_mode:uefi"},
      "instance_info": {"deploy_boot_mode": "bios"}}, "bios"),
])
def test_boot_mode(store, context, values, expected):
    task = make_task(store, context, ports=(), **values)
    assert pxe.boot_mode(task, "bios") == expected


def test_invalid_boot_mode_refused(store, context):
    task = make_task(store, context, boot="pxe", instance_info={"deploy_boot_mode": "efi"})
    with pytest.raises(errors.InvalidParameter, match="boot mode 'efi'"):
        task.boot.validate(task)


@pytest.mark.parametrize("values, ports, match", [
    ({}, (), "no port with pxe_enabled"),
    ({"driver_info": {"deploy_kernel": "missing.kernel"}}, MACS, "not a file in the HTTP"),
    ({"driver_info": {"deploy_kernel": "../../etc/passwd"}}, MACS, "relative to the boot"),
    ({"driver_info": {"deploy_ramdisk": "http://x/r;reboot"}}, MACS, "must be a http"),
    ({"driver_info": {"kernel_append_params": "console=ttyS0 ${evil}"}}, MACS,
     "kernel command line"),
    ({"driver_info": {"kernel_append_params": "ipa-agent-token=abc"}}, MACS, "secret"),
    ({"driver_info": {"kernel_append_params": "nofb ipa-api-url=http://10.9.9.9:6385"}},
     MACS, "must not set 'ipa-api-url'"),
    ({"driver_info": {"kernel_append_params": "BOOTIF=01-52-54-00-00-00-99"}}, MACS,
     "must not set 'BOOTIF'"),
    ({"driver_info": {"deploy_kernel": "http://user:secret@10.1.1.1/k"}}, MACS,
     "carries credentials"),
    ({"driver_info": {"deploy_ramdisk": "http://user:secret@10.1.1.1/r"}}, MACS,
     "carries credentials"),
])
def test_validate_refuses_bad_configuration(store, context, values, ports, match):
    task = make_task(store, context, ports=ports, **values)
    with pytest.raises(errors.InvalidParameter, match=match):
        task.boot.validate(task)
    with pytest.raises(errors.InvalidParameter):
        task.boot.prepare_ramdisk(task)
    assert not (root(context, "http") / "ipxe").exists()  # nothing half-written


def test_no_kernel_configured(store, tmp_path):
    settings = from_options({"data_dir": str(tmp_path / "d"), "pxe.enabled": False})
    ctx = DriverContext.create(settings, netboot=NetbootServices(settings))
    task = make_task(store, ctx)
    with pytest.raises(errors.InvalidParameter, match=r"set driver_info deploy_kernel"):
        task.boot.validate(task)


def test_driver_info_urls_and_params_override_settings(store, context):
    task = make_task(store, context, driver_info={
        "deploy_kernel": "http://10.1.1.1/k", "deploy_ramdisk": "http://10.1.1.1/r",
        "kernel_append_params": "console=ttyS0"})
    task.boot.prepare_ramdisk(task)
    text = (root(context, "http") / "ipxe" / "52-54-00-00-00-0a.ipxe").read_text()
    assert "kernel --name kernel http://10.1.1.1/k initrd=ramdisk " \
           "ipa-api-url=http://127.0.0.1:6385 console=ttyS0 BOOTIF=" in text
    assert "nofb" not in text


def test_node_name_with_metacharacters_is_escaped(store, context):
    task = make_task(store, context, name="x;reboot", ports=(MACS[0],))
    task.boot.prepare_ramdisk(task)
    text = (root(context, "http") / "ipxe" / "52-54-00-00-00-0a.ipxe").read_text()
    assert "node x_reboot (" in text and ";reboot" not in text


class RecordingDhcp:
    def __init__(self):
        self.calls = []

    def update(self, task, opts):
        self.calls.append(("update", opts))

    def clean(self, task):
        self.calls.append(("clean", task.node.uuid))


def test_dhcp_hook_only_when_a_provider_exists(store, context):
    task = make_task(store, context)
    task.boot.prepare_ramdisk(task)  # the no-op provider: works, nothing to call
    dhcp = RecordingDhcp()
    task = Task(store, task.node, "test-host",
                DriverRegistry(dataclasses.replace(context, dhcp=dhcp)))
    task.boot.prepare_ramdisk(task)
    task.boot.clean_up_ramdisk(task)
    (kind, opts), (kind2, uuid) = dhcp.calls
    assert kind == "update" and kind2 == "clean" and uuid == task.node.uuid
    assert opts == pxe.DhcpBootOptions(
        node_uuid=task.node.uuid, macs=MACS, boot_mode="bios", tftp_server="127.0.0.1",
        bootfile="undionly.kpxe", ipxe_script_url="http://127.0.0.1:8080/boot.ipxe")


def test_the_end_of_a_deploy_removes_the_ramdisk_config_once(store, context):
    """finish_deploy runs clean_up_ramdisk then prepare_instance in one task: the second
    finds nothing this task left, so it does not list and remove again; a stale file
    from elsewhere is still removed by a later task, and one published since, by this."""
    dhcp = RecordingDhcp()
    registry = DriverRegistry(dataclasses.replace(context, dhcp=dhcp))
    task = Task(store, make_task(store, context).node, "test-host", registry)
    task.boot.prepare_ramdisk(task)
    task.boot.clean_up_ramdisk(task)
    task.boot.prepare_instance(task)
    assert [kind for kind, _ in dhcp.calls] == ["update", "clean"]
    task.boot.prepare_ramdisk(task)              # published again: removed again
    task.boot.prepare_instance(task)
    assert [kind for kind, _ in dhcp.calls] == ["update", "clean", "update", "clean"]
    assert not list((root(context, "http") / "ipxe").iterdir())
    stale = root(context, "http") / "ipxe" / "52-54-00-00-00-0a.ipxe"
    stale.write_text("#!ipxe\n")                # left by another process or version
    later = Task(store, task.node, "test-host", registry)
    later.boot.prepare_instance(later)
    assert not stale.exists() and dhcp.calls[-1][0] == "clean"


def test_ports_without_pxe_get_no_config_but_are_cleaned(store, context):
    task = make_task(store, context, ports=(MACS[0],), no_pxe=(MACS[1],))
    stale = root(context, "http") / "ipxe" / "52-54-00-00-00-0b.ipxe"
    stale.parent.mkdir(parents=True)
    stale.write_text("#!ipxe\n")  # e.g. written before pxe_enabled was switched off
    task.boot.prepare_ramdisk(task)
    assert (root(context, "http") / "ipxe" / "52-54-00-00-00-0a.ipxe").exists()
    task.boot.clean_up_ramdisk(task)
    assert not list(stale.parent.iterdir())


def test_dhcp_options_for_pxe_uefi(store, context):
    dhcp = RecordingDhcp()
    context = dataclasses.replace(context, dhcp=dhcp)
    task = make_task(store, context, boot="pxe", ports=(MACS[0],), boot_mode="uefi")
    task.boot.prepare_ramdisk(task)
    (_, opts), = dhcp.calls
    assert (opts.boot_mode, opts.bootfile, opts.ipxe_script_url) == ("uefi", "grubx64.efi", None)


def test_dhcp_options_name_this_conductors_boot_server(store, context):
    """[pxe] tftp_host (or [dhcp] boot_server) is where this conductor serves boot: the
    node's own DHCP options name it and this conductor's iPXE URL."""
    settings = dataclasses.replace(context.settings, pxe=dataclasses.replace(
        context.settings.pxe, tftp_host="127.0.0.2", http_host="127.0.0.2"))
    dhcp = RecordingDhcp()
    context = dataclasses.replace(context, settings=settings, dhcp=dhcp,
                                  netboot=NetbootServices(settings))
    task = make_task(store, context)
    task.boot.prepare_ramdisk(task)
    (_, opts), = dhcp.calls
    assert opts.boot_server == BootServer("127.0.0.2", "http://127.0.0.2:8080/boot.ipxe")


def test_boot_server_unknown_leaves_the_dnsmasq_wide_rules(store, context):
    assert context.netboot.boot_server() is None      # no tftp_host, no boot_server
    settings = dataclasses.replace(context.settings, dhcp=dataclasses.replace(
        context.settings.dhcp, boot_server="10.0.0.9", ipxe_url="tftp://10.0.0.9/boot.ipxe"))
    assert NetbootServices(settings).boot_server() == \
        BootServer("10.0.0.9", "tftp://10.0.0.9/boot.ipxe")


def test_take_over_writes_a_waiting_nodes_config_here_and_nothing_for_active(store, context):
    dhcp = RecordingDhcp()
    context = dataclasses.replace(context, dhcp=dhcp)
    waiting = make_task(store, context)
    store.update_node(waiting.node.id, {"provision_state": "wait call-back"})
    waiting = Task(store, store.get_node_by_id(waiting.node.id), "test-host",
                   DriverRegistry(context))
    waiting.boot.take_over(waiting)
    script = root(context, "http") / "ipxe" / "52-54-00-00-00-0a.ipxe"
    assert script.exists() and [kind for kind, _ in dhcp.calls] == ["update"]
    node = store.get_node_by_id(waiting.node.id)
    assert "fake_boot_device" not in (node.driver_internal_info or {})  # no BMC call
    store.update_node(node.id, {"provision_state": "active"})
    active = Task(store, store.get_node_by_id(node.id), "test-host", DriverRegistry(context))
    active.boot.take_over(active)
    assert not script.exists() and dhcp.calls[-1][0] == "clean"
