"""``patching``: the commands of a host-mode agent (``metalcast-agent host``).

* ``patching.install {"force", "locked", "request_id"}`` (async): install what the
  repos say this host needs (PatchEngine.install: an unlocked host is refused
  unless forced, §4.6); the next heartbeat, sent as soon as it ends, carries
  ``install_request`` = ``request_id`` so the conductor knows the report answers it.
* ``patching.query`` (sync): heartbeat with a fresh report now (HELLO_AGENT).

Only host mode registers this extension; the ramdisk has no patch engine to run.
"""
from __future__ import annotations

from ramdisk_agent import validate
from ramdisk_agent.commands import Extension, async_command, sync_command


def check_install(params: dict) -> None:
    """``force`` and ``locked`` booleans (or null), ``request_id`` a string (or null)."""
    validate.field(params, "force", "a boolean")
    validate.field(params, "locked", "a boolean")
    validate.field(params, "request_id", "a string")


class PatchingExtension(Extension):
    name = "patching"

    @async_command(validate=check_install)
    def install(self, force: bool | None = False, locked: bool | None = None,
                request_id: str | None = None):
        return self.agent.install(force=bool(force), locked=locked, request_id=request_id)

    @sync_command
    def query(self):
        self.agent.heartbeat_now()
        return {"reporting": True}
