"""ramdisk_agent.ramdisk."""
