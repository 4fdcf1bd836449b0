"""ramdisk_agent.wire."""
