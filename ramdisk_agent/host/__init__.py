"""Host mode of the agent: in-service RPM patching on installed hosts and in the ramdisk.

Stdlib only plus the ``rpm`` and ``dnf`` commands; nothing of conductor or api.
"""
from ramdisk_agent.host.engine import PatchEngine
from ramdisk_agent.host.errors import PatchEngineError

__all__ = ["PatchEngine", "PatchEngineError"]
