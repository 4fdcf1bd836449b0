"""The status of one agent command, as ``command_status`` in IPA's command result.

The agent sets it (ramdisk_agent/commands.py), the conductor reads it
(conductor/drivers/deploy/client.py); the JSON text is the member's value.
"""
from __future__ import annotations

import enum


class CommandStatus(str, enum.Enum):
    """Where a command is; only RUNNING is not final."""

    RUNNING = "RUNNING"        #: started; ask again (or wait) for the end
    SUCCEEDED = "SUCCEEDED"    #: ended; ``command_result`` holds the answer
    FAILED = "FAILED"          #: ended; ``command_error`` says why


RUNNING = CommandStatus.RUNNING
SUCCEEDED = CommandStatus.SUCCEEDED
FAILED = CommandStatus.FAILED
