"""``standby``: power_off, reboot, sync, get_partition_uuids.

Power actions depend on ``--power-action``: ``system`` (the ramdisk) syncs and runs
``poweroff -f`` / ``reboot -f`` a second later (the command is asynchronous: its HTTP
reply must leave the machine before the kernel stops; the QEMU deploy test caught a
conductor waiting a whole command timeout for a reply lost that way); ``exit`` (the
virtual lab, where the "machine" is just this process and a disk file) writes
``{"event": "power_off"|"reboot", ...}`` to ``--state-file`` and ends the agent
process with status 0 about half a second later, after the reply has gone out. The
state file is written in both modes.
"""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time

from ramdisk_agent import gpt
from ramdisk_agent.commands import Extension, async_command, sync_command
from ramdisk_agent.errors import AgentError

LOG = logging.getLogger(__name__)

EXIT_DELAY = 0.5
SYSTEM_DELAY = 1.0   # seconds between the reply and poweroff -f / reboot -f
SYSTEM_COMMANDS = {"power_off": "poweroff", "reboot": "reboot"}


class StandbyExtension(Extension):
    name = "standby"

    # No parameters (Ironic sends {}): the runner refuses any, in the request.
    @async_command
    def power_off(self):
        return self._power("power_off")

    @async_command
    def reboot(self):
        return self._power("reboot")

    @sync_command
    def sync(self):
        os.sync()
        return None

    @sync_command
    def get_partition_uuids(self):
        """Disk identifier and partitions of the disk the image went to."""
        disk = self.agent.root_disk
        if not disk:
            raise AgentError("No image has been written by this agent yet")
        table = gpt.read_table(disk)
        esp = next((p for p in table.partitions if p.type_guid == gpt.ESP_TYPE), None)
        return {"root uuid": table.disk_id,
                "efi system partition uuid": esp.guid if esp else None,
                "partitions": {str(p.number): p.guid for p in table.partitions}}

    def _power(self, event: str):
        LOG.info("Node %s: %s requested", self.agent.node_uuid, event)
        os.sync()
        self.agent.power_event(event)
        if self.agent.config.power_action == "exit":
            self.agent.stop_after_power_action(EXIT_DELAY)
            return None
        time.sleep(SYSTEM_DELAY)  # this is the command's thread, not the HTTP reply's
        tool = SYSTEM_COMMANDS[event]
        cmd = [tool, "-f"] if shutil.which(tool) else ["busybox", tool, "-f"]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            raise AgentError(f"{' '.join(cmd)} failed: {done.stderr.strip()}")
        return None
