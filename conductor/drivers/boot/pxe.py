"""The ``pxe`` and ``ipxe`` boot interfaces (Ironic's names): network boot into the agent.

``prepare_ramdisk`` renders the node's per-MAC boot configs (conductor.netboot.render)
with the deploy kernel and ramdisk and a kernel command line that tells the agent
where the API is and which NIC it booted from, nothing secret. Every other step
removes them: once the instance is written the node boots from its disk.

- ``ipxe``: iPXE scripts in the HTTP root, chained from the generic ``boot.ipxe``.
- ``pxe``: PXELINUX ``pxelinux.cfg/01-<mac>`` for BIOS, GRUB ``grub/grub.cfg-01-<mac>``
  for UEFI, both in the TFTP root.
"""
from __future__ import annotations

import dataclasses
import logging
import os

from conductor import errors, states
from conductor.drivers import base
from conductor.netboot import render
from conductor.netboot.dhcp import DhcpProvider
from conductor.netboot.dhcp_options import BootServer
from conductor.netboot.services import BOOT_MODES, NetbootServices

LOG = logging.getLogger(__name__)

#: Provision states in which the node may be network-booting its ramdisk (the steps that
#: enter them call prepare_ramdisk). A port change rewrites the config written for them;
#: in every other state it only removes: a stale file must not make an idle node bootable.
RAMDISK_STATES = frozenset(s.value for s in (
    states.State.DEPLOYING, states.State.DEPLOYWAIT, states.State.DEPLOYHOLD,
    states.State.CLEANING, states.State.CLEAN_WAIT, states.State.CLEAN_HOLD,
    states.State.RESCUING, states.State.RESCUEWAIT, states.State.INSPECTING,
    states.State.INSPECT_WAIT, states.State.SERVICING, states.State.SERVICE_WAIT,
    states.State.SERVICE_HOLD))
#: Boot mode -> boot loader of the ``pxe`` interface.
PXE_LOADERS = {"bios": "pxelinux", "uefi": "grub"}
#: (boot loader, boot mode) -> first-stage boot file DHCP hands out.
DHCP_BOOTFILES = {("ipxe", "bios"): "undionly.kpxe", ("ipxe", "uefi"): "snponly.efi",
                  ("pxelinux", "bios"): "pxelinux.0", ("grub", "uefi"): "grubx64.efi"}


@dataclasses.dataclass(frozen=True)
class DhcpBootOptions:
    """What the DHCP provider needs to point a node's NICs at its boot files."""

    node_uuid: str
    macs: tuple[str, ...]
    boot_mode: str                 # bios | uefi
    tftp_server: str               # DHCP next-server / option 66
    bootfile: str                  # option 67 for firmware PXE (file in the TFTP root)
    ipxe_script_url: str | None    # option 67 for iPXE clients (None: not an iPXE boot)
    #: This conductor's boot server, named in the node's own DHCP options (None: the
    #: dnsmasq-wide rules name one; conductor/netboot/dhcp_options.py).
    boot_server: BootServer | None = None


def boot_mode(task, default: str) -> str:
    """instance_info.deploy_boot_mode > capabilities boot_mode > node.boot_mode > default."""
    node = task.node
    info = node.instance_info or {}
    candidates = [info.get("deploy_boot_mode"),
                  _capability(info.get("capabilities"), "boot_mode"),
                  _capability((node.properties or {}).get("capabilities"), "boot_mode"),
                  node.boot_mode, default]
    mode = next(m for m in candidates if m)
    if mode not in BOOT_MODES:
        raise errors.InvalidParameter(
            f"Node {node.uuid}: boot mode {mode!r} is not one of {', '.join(BOOT_MODES)}.")
    return mode


def _capability(value, key: str):
    """Ironic capabilities are "k1:v1,k2:v2" strings (or dicts through some clients)."""
    if isinstance(value, dict):
        return value.get(key)
    if isinstance(value, str):
        pairs = (item.split(":", 1) for item in value.split(",") if ":" in item)
        return dict((k.strip(), v.strip()) for k, v in pairs).get(key)
    return None


class _NetworkBoot(base.BootInterface):
    """Shared logic; subclasses choose the boot loader. One instance per task (the
    node locked): it knows whether it removed the node's ramdisk config already."""

    #: This task removed the node's ramdisk config and published none since: the end
    #: of a deploy (clean_up_ramdisk, then prepare_instance) removes it once. Port
    #: changes that write boot files take the node lock, so none lands meanwhile.
    _removed = False

    def _loader(self, task) -> str:
        raise NotImplementedError

    def _services(self) -> NetbootServices:
        services = self.context.netboot
        if services is None:
            raise errors.DriverError("network boot needs the appliance's boot services "
                                     "(conductor.netboot), and this process has none")
        services.prepare()
        return services

    def validate(self, task) -> None:
        self._boot_config(task, self._services())

    def prepare_ramdisk(self, task) -> None:
        self._publish(task)
        # The next power-on must network-boot, whatever the last deploy left (disk,
        # persistent): as Ironic's PXE boot does, for this boot only.
        task.management.set_boot_device(task, base.BootDevice.PXE, persistent=False)

    def _publish(self, task) -> None:
        """Write the ramdisk config for the node's pxe-enabled MACs and point DHCP at it."""
        services = self._services()
        boot = self._boot_config(task, services)
        assert services.renderer is not None  # set by prepare()
        self._removed = False
        services.renderer.write(boot)
        provider = self._dhcp(task)
        if provider is not None:
            provider.update(task, self._dhcp_options(task, boot, services))

    def take_over(self, task) -> None:
        """A node whose ramdisk config is live (RAMDISK_STATES: a wait call-back, a
        hold) gets it written here, in this conductor's boot roots, and its DHCP entry
        names this conductor's boot server: its next network boot reaches the new
        owner. Any other state network-boots nothing: as after a deploy."""
        if task.node.provision_state in RAMDISK_STATES:
            self._publish(task)
        else:
            self.prepare_instance(task)

    def ports_changed(self, task, old_macs) -> None:
        """Drop the boot files and DHCP entries of MACs the node no longer boots from.

        ``old_macs``: every MAC the node had before its ports changed. Those that are
        no longer pxe-enabled ports of the node lose their files and DHCP entries, so
        a NIC that later shows up with such a MAC cannot boot this node's ramdisk. If
        the node's ramdisk config is live (it is in one of RAMDISK_STATES and files
        existed for one of its MACs), it is rewritten for the MACs it has now.
        """
        renderer = self._services().renderer
        assert renderer is not None  # set by prepare()
        current = {p.address for p in _ports(task) if p.pxe_enabled}
        gone = sorted(set(old_macs) - current)
        live = task.node.provision_state in RAMDISK_STATES and any(
            path.exists() for mac in old_macs for path in renderer.node_paths(mac))
        removed = renderer.remove(gone)
        provider = self._dhcp(task)
        if provider is not None and gone:
            provider.remove(task.node.uuid, gone)
        if gone:
            LOG.info("Node %s: %s no longer network-boot it; removed %s", task.node.uuid,
                     ", ".join(gone), ", ".join(str(p) for p in removed) or "no boot file")
        if live and current:
            self._publish(task)
        elif live:
            LOG.warning("Node %s: boot config removed with its last pxe-enabled port; it "
                        "cannot network-boot until a port is added", task.node.uuid)

    def clean_up_ramdisk(self, task) -> None:
        self._remove(task)

    def prepare_instance(self, task) -> None:
        """Whole-disk images boot locally: the node must not network-boot again."""
        if not self._removed:   # clean_up_ramdisk just did, in this task
            self._remove(task)

    def clean_up_instance(self, task) -> None:
        self._remove(task)

    def _remove(self, task) -> None:
        macs = [port.address for port in _ports(task)]
        renderer = self._services().renderer
        assert renderer is not None  # set by prepare()
        removed = renderer.remove(macs)
        if removed:
            LOG.info("Node %s: removed boot config %s", task.node.uuid,
                     ", ".join(str(p) for p in removed))
        provider = self._dhcp(task)
        if provider is not None and hasattr(provider, "clean"):
            provider.clean(task)
        self._removed = True

    def _dhcp(self, task) -> DhcpProvider:
        """The appliance's DHCP provider (the no-op one without [dhcp])."""
        return self.context.dhcp

    def _boot_config(self, task, services: NetbootServices) -> render.NodeBoot:
        node, settings = task.node, services.settings
        macs = tuple(p.address for p in _ports(task) if p.pxe_enabled)
        if not macs:
            raise errors.InvalidParameter(
                f"Node {node.uuid} has no port with pxe_enabled: create a port with the "
                "MAC address of the NIC it network-boots from.")
        loader = self._loader(task)
        info = task.driver_info
        refs = {}
        for key in ("deploy_kernel", "deploy_ramdisk"):
            value = info.get(key) or getattr(settings.pxe, key)
            refs[key] = self._reference(node, key, value, loader, services)
        append = info.get("kernel_append_params", settings.pxe.kernel_append_params)
        params = [render.checked_token(f"ipa-api-url={services.api_url}", "[pxe] api_url")]
        params += render.checked_params(append, "kernel_append_params")
        return render.NodeBoot(node.uuid, node.name, macs, loader, refs["deploy_kernel"],
                               refs["deploy_ramdisk"], tuple(params))

    @staticmethod
    def _reference(node, key, value, loader, services) -> render.Checked:
        if not value:
            raise errors.InvalidParameter(
                f"Node {node.uuid}: set driver_info {key} (an http URL or a file name in "
                f"{services.http_root}) or [pxe] {key} in the configuration.")
        ref = render.locate(value, loader, services.http_url, f"driver_info {key}")
        if "://" not in str(value):
            path = os.path.realpath(services.http_root / str(value))
            if not path.startswith(os.path.realpath(services.http_root) + os.sep) \
                    or not os.path.isfile(path):
                raise errors.InvalidParameter(
                    f"Node {node.uuid}: {key} {value!r} is not a file in the HTTP boot "
                    f"root {services.http_root}.")
        return ref

    def _dhcp_options(self, task, boot, services) -> DhcpBootOptions:
        settings = services.settings
        mode = boot_mode(task, settings.pxe.default_boot_mode)
        return DhcpBootOptions(
            node_uuid=task.node.uuid, macs=boot.macs, boot_mode=mode,
            tftp_server=settings.pxe.tftp_host or settings.api.host,
            bootfile=DHCP_BOOTFILES[(boot.loader, mode)],
            ipxe_script_url=f"{services.http_url}/boot.ipxe" if boot.loader == "ipxe" else None,
            boot_server=services.boot_server())


def _ports(task) -> list:
    return task.store.list_ports({"node_id": task.node.id})


class PXEBoot(_NetworkBoot):
    """PXELINUX (BIOS) or GRUB (UEFI) configs over TFTP."""

    def _loader(self, task) -> str:
        return PXE_LOADERS[boot_mode(task, self._services().settings.pxe.default_boot_mode)]


class IPXEBoot(_NetworkBoot):
    """iPXE scripts over HTTP (BIOS and UEFI alike)."""

    def _loader(self, task) -> str:
        return "ipxe"
