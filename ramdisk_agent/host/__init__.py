"""Host mode of the agent: in-service RPM patching on installed hosts and in the ramdisk.

Stdlib only plus the ``rpm`` and ``dnf`` commands (and ``cryptography`` when the
host agent makes its certificate, credentials.py); nothing of conductor or api.
"""
from ramdisk_agent.host.engine import PatchEngine

__all__ = ["PatchEngine"]
