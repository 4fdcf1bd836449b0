"""Flag files and restart scripts of a host, where StarlingX keeps them (§2.3, §4.5, §4.6).

``run_dir`` plays ``/run`` (= ``/var/run``, a tmpfs, so every flag clears on
reboot); it is ``<root>/run`` so that RPM scriptlets, which rpm runs chrooted
in the root, write the same files the engine reads. Restart scripts run the
same way: chrooted into the root when it is not ``/``.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import time
from pathlib import Path

#: flag name -> path under the run dir (StarlingX's names).
FLAGS = {
    "node_is_patched": "node_is_patched",          # installed, not yet made effective
    "node_is_patched_rr": "node_is_patched_rr",    # a reboot-required RPM was installed
    "patch_installing": "patch_installing",        # an install is running
    "patch_install_failed": "patch_install_failed",
    "node_locked": ".node_locked",                 # maintained by maintenance (mtce)
}
#: a restart script touches this when the patch updates the agent itself (§4.5)
RESTART_AGENT = "patching/.restart.patch-agent"
SCRIPTS_DIR = "patching/patch-scripts"
FLAGS_DIR = "patching/patch-flags"
INIT_GUARD = "etc/patching/.patched_during_init"
SCRIPT_LOG = "var/log/patching-insvc.log"
SCRIPT_TIMEOUT = 600


@dataclasses.dataclass
class HostFiles:
    """The flag files, scripts and logs of one root."""

    root: Path
    run_dir: Path

    def __post_init__(self):
        self.root, self.run_dir = Path(self.root), Path(self.run_dir)
        if self.root != Path("/") and not self.run_dir.is_relative_to(self.root):
            raise ValueError(f"run dir {self.run_dir} must be inside the root {self.root}: "
                             "RPM scriptlets write their flags there")

    def flag(self, name: str) -> Path:
        return self.run_dir / FLAGS[name]

    def is_set(self, name: str) -> bool:
        return self.flag(name).exists()

    def set(self, name: str) -> None:
        path = self.flag(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()

    def clear(self, name: str) -> None:
        self.flag(name).unlink(missing_ok=True)

    def take_restart_request(self) -> bool:
        """Whether a restart script asked for the agent to restart (and forget it)."""
        path = self.run_dir / RESTART_AGENT
        found = path.exists()
        path.unlink(missing_ok=True)
        return found

    @property
    def scripts(self) -> Path:
        return self.run_dir / SCRIPTS_DIR

    @property
    def init_guard(self) -> Path:
        return self.root / INIT_GUARD

    @property
    def script_log(self) -> Path:
        return self.root / SCRIPT_LOG

    def inside(self, path: Path) -> str:
        """``path`` as a process chrooted in the root sees it."""
        if self.root == Path("/"):
            return str(path)
        return "/" + str(path.relative_to(self.root))

    def reset_script_dirs(self) -> None:
        """Recreate empty patch-scripts and patch-flags (mode 0700) before a transaction."""
        for sub in (SCRIPTS_DIR, FLAGS_DIR):
            path = self.run_dir / sub
            shutil.rmtree(path, ignore_errors=True)
            path.mkdir(parents=True, mode=0o700)
            path.chmod(0o700)

    def run_scripts(self) -> int:
        """Run every executable restart script, sorted; the number that failed."""
        scripts = sorted(p for p in self.scripts.glob("*")
                         if p.is_file() and os.access(p, os.X_OK))
        failures = 0
        self.script_log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.script_log, "a", encoding="utf-8") as log:
            for script in scripts:
                log.write(f"{time.strftime('%FT%T')} running {script.name}\n")
                log.flush()
                code = self._run_one(script, log)
                log.write(f"{time.strftime('%FT%T')} {script.name} exited {code}\n")
                failures += code != 0
        return failures

    def _run_one(self, script: Path, log) -> int:
        argv = ["/bin/sh", "-x", self.inside(script)]
        if self.root != Path("/"):
            argv = ["chroot", str(self.root), *argv]
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
               "PATCH_SCRIPTDIR": self.inside(self.scripts),
               "PATCH_FLAGDIR": self.inside(self.run_dir / FLAGS_DIR),
               "PATCH_STATUS_OK": "0", "PATCH_STATUS_FAILED": "1"}
        try:
            return subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                  timeout=SCRIPT_TIMEOUT).returncode
        except subprocess.TimeoutExpired:
            log.write(f"{script.name} did not finish in {SCRIPT_TIMEOUT}s\n")
            return 1
        except OSError as exc:
            log.write(f"{script.name} could not run: {exc}\n")
            return 1
