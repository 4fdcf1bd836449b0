"""``patching``: the commands of a host-mode agent (``metalcast-agent host``).

* ``patching.install {"force", "locked", "request_id"}`` (async): install what the
  repos say this host needs (PatchEngine.install: an unlocked host is refused
  unless forced, §4.6); the next heartbeat, sent as soon as it ends, carries
  ``install_request`` = ``request_id`` so the conductor knows the report answers it.
* ``patching.query`` (sync): heartbeat with a fresh report now (HELLO_AGENT).

Only host mode registers this extension; the ramdisk has no patch engine to run.
"""
from __future__ import annotations

from ramdisk_agent.commands import Extension, async_command, sync_command
from ramdisk_agent.errors import InvalidContent


class PatchingExtension(Extension):
    name = "patching"

    @async_command
    def install(self, force: bool = False, locked: bool | None = None,
                request_id: str | None = None):
        if not isinstance(force, bool) or not isinstance(locked, (bool, type(None))):
            raise InvalidContent('"force" and "locked" must be booleans')
        if request_id is not None and not isinstance(request_id, str):
            raise InvalidContent('"request_id" must be a string')
        return self.agent.install(force=force, locked=locked, request_id=request_id)

    @sync_command
    def query(self, **_ignored):
        self.agent.heartbeat_now()
        return {"reporting": True}
