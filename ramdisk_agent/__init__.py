"""The metalcast agent (ramdisk and host mode). Imports nothing of conductor or api."""

__version__ = "0.1.0"
