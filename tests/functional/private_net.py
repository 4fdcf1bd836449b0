"""A private network namespace for a test: only loopback, where a server may hold a
fixed port (StarlingX's 127.0.0.1:5487) that nothing else on the machine can answer,
and two runs never meet. ``unshare --net`` makes it (root, as CI runs the tests);
commands run in it through ``nsenter``.
"""
from __future__ import annotations

import json
import subprocess

import pytest

from tests.functional.tools import require
from virtlab.process import stop


class PrivateNet:
    """A network namespace with only loopback, held by a sleeping process; commands
    run in it through ``nsenter`` (which execs: a PID is the command's own)."""

    def __init__(self):
        unshare, nsenter = require("unshare"), require("nsenter")
        require("ip")
        self.holder = subprocess.Popen(
            [unshare, "--net", "sh", "-c", "ip link set lo up && echo up && exec sleep infinity"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if self.holder.stdout.readline().strip() != "up":
            self.holder.wait(10)
            pytest.fail("cannot make a private network namespace (unshare --net needs "
                        f"root or CAP_SYS_ADMIN): {self.holder.stderr.read()}")
        self.prefix = (nsenter, f"--net=/proc/{self.holder.pid}/ns/net")

    def run(self, cmd: list, **kwargs) -> subprocess.CompletedProcess:
        kwargs.setdefault("timeout", 300)
        return subprocess.run([*self.prefix, *map(str, cmd)], capture_output=True,
                              text=True, **kwargs)

    def api(self, url: str, method: str, path: str, body=None, ok=(200,)):
        """One Ironic API call from inside (curl); the JSON body, or None."""
        cmd = [require("curl"), "-sS", "-X", method, "-w", "\n%{http_code}",
               "-H", "X-OpenStack-Ironic-API-Version: latest",
               "-H", "Content-Type: application/json", url + path]
        if body is not None:
            cmd += ["--data", json.dumps(body)]
        proc = self.run(cmd, timeout=60)
        text, _, status = proc.stdout.rpartition("\n")
        assert proc.returncode == 0 and int(status) in ok, (method, path, proc)
        return json.loads(text) if text.strip() else None

    def close(self) -> None:
        stop(self.holder.pid, self.holder)
