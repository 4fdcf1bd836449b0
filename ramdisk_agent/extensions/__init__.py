"""Command extensions (``<extension>.<command>``), one module each."""
from __future__ import annotations

from ramdisk_agent.extensions.clean import CleanExtension
from ramdisk_agent.extensions.deploy import DeployExtension
from ramdisk_agent.extensions.image import ImageExtension
from ramdisk_agent.extensions.patches import PatchesExtension
from ramdisk_agent.extensions.standby import StandbyExtension

EXTENSIONS = (StandbyExtension, DeployExtension, CleanExtension, ImageExtension,
              PatchesExtension)


def all_extensions(agent) -> list:
    return [cls(agent) for cls in EXTENSIONS]
