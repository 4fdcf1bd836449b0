"""The ipxe boot interface in a started appliance: deleting a node removes the boot files
an earlier step left (the interface itself: tests/unit/conductor/drivers/boot/test_pxe.py)."""
from __future__ import annotations

from conductor.config import from_options
from conductor.engine.task import Task
from tests.unit.conductor.drivers.boot.test_pxe import MACS


def test_deleting_a_node_removes_its_boot_files(tmp_path):
    from conductor.appliance import Appliance
    settings = from_options({"data_dir": str(tmp_path / "app"), "conductor.host": "test-host",
                             "pxe.enabled": False, "conductor.sync_power_state_interval": 0,
                             "pxe.deploy_kernel": "http://10.0.0.1/k",
                             "pxe.deploy_ramdisk": "http://10.0.0.1/r"})
    appliance = Appliance(settings)
    appliance.start()
    try:
        service = appliance.service
        node = service.create_node({"driver": "fake-hardware", "boot_interface": "ipxe",
                                    "name": "doomed"})
        service.create_port({"address": MACS[0], "node_uuid": node.uuid})
        task = Task(appliance.store, appliance.store.get_node(node.uuid), "test-host",
                    appliance.drivers)
        task.boot.prepare_ramdisk(task)  # e.g. a deploy that failed midway
        script = settings.data_path / "httpboot" / "ipxe" / "52-54-00-00-00-0a.ipxe"
        assert script.exists()
        service.set_maintenance(node.uuid, True, "broken")
        service.delete_node(node.uuid)
        assert not script.exists()
    finally:
        appliance.stop()
