"""``image.install_bootloader``: nothing to do for whole-disk images.

metalcast deploys whole-disk images only; they carry their own bootloader (and ESP
for UEFI), so installing one would only risk overwriting it. The command exists
because the conductor calls it after ``write_image``; it succeeds without touching
the disk and says so in its result.
"""
from __future__ import annotations

import logging

from ramdisk_agent import validate
from ramdisk_agent.commands import Extension, async_command

LOG = logging.getLogger(__name__)
BOOT_MODES = ("bios", "uefi")


def check_install_bootloader(params: dict) -> None:
    """Ironic's fields: partition UUIDs (strings or null) and the boot mode."""
    for key in ("root_uuid", "efi_system_part_uuid", "prep_boot_part_uuid"):
        validate.field(params, key, "a string")
    validate.choice(params, "target_boot_mode", BOOT_MODES)


class ImageExtension(Extension):
    name = "image"

    @async_command(validate=check_install_bootloader)
    def install_bootloader(self, root_uuid=None, efi_system_part_uuid=None,
                           prep_boot_part_uuid=None, target_boot_mode="bios", **_ignored):
        LOG.info("Node %s: install_bootloader is a no-op for whole-disk images "
                 "(root %s, boot mode %s)", self.agent.node_uuid, root_uuid, target_boot_mode)
        return {"message": "whole-disk image: bootloader left as shipped in the image"}
