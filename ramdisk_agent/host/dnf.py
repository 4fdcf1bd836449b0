"""The adapter for ``rpm`` and ``dnf`` on one root: the only place they are run.

dnf runs fully offline against exactly two repos given by URL (test-lab.md §6):
``--installroot``, every configured repo disabled, ``platform-base`` and
``platform-updates`` added with ``--repofrompath``, our own empty config file
and cache dir, no weak deps, no GPG check (patches are signed as a whole and
checked by the controller, §1.3). Debian's rpm keeps its database under
``~/.rpmdb``; ``%_dbpath`` in a private ``$HOME/.rpmmacros`` points rpm *and*
dnf at the root's real database. ``clean_requirements_on_remove`` is off so an
erase removes exactly what the plan says, and ``installonlypkgs`` is emptied so a
kernel is replaced rather than added beside the old one (§4.4).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import subprocess
from pathlib import Path

from ramdisk_agent.errors import PatchEngineError
from ramdisk_agent.wire.packages import QUERY_FORMAT, Package

LOG = logging.getLogger(__name__)
DNF_QUERY_FORMAT = "%{name}\t%{epoch}\t%{version}\t%{release}\t%{arch}"
TIMEOUT = 1800
#: dnf's shell mode exits 0 even when the transaction fails; it prints this instead.
FAILURE_MARKERS = ("Error: Transaction failed", "Error: ", "Failed:")


@dataclasses.dataclass(frozen=True)
class Repos:
    """The two repos of a release, by URL (http://, https:// or file://)."""

    base: str
    updates: str | None = None

    def argv(self) -> list[str]:
        out = ["--disablerepo=*"]
        for repo_id, url in (("platform-base", self.base), ("platform-updates", self.updates)):
            if url:
                out += [f"--repofrompath={repo_id},{url}", f"--enablerepo={repo_id}"]
        return out

    def urls(self) -> list[str]:
        return [url for url in (self.base, self.updates) if url]


@dataclasses.dataclass
class DnfResult:
    ok: bool
    output: str


def _tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise PatchEngineError(f"{name} is not installed (package {package})")
    return path


class RpmDnf:
    """rpm and dnf bound to one root, rpm database path, release and cache dir."""

    def __init__(self, root: Path, dbpath: str, releasever: str, cache_dir: Path,
                 repos: Repos):
        self.root, self.dbpath, self.releasever = Path(root), dbpath, releasever
        self.cache_dir, self.repos = Path(cache_dir), repos
        self._home = self.cache_dir / "home"
        self._config = self.cache_dir / "dnf.conf"

    def _env(self) -> dict[str, str]:
        self._home.mkdir(parents=True, exist_ok=True)
        macros = self._home / ".rpmmacros"
        text = f"%_dbpath {self.dbpath}\n"
        if not macros.exists() or macros.read_text() != text:
            macros.write_text(text)
        if not self._config.exists():
            self._config.write_text("[main]\n")
        return {**os.environ, "HOME": str(self._home), "LC_ALL": "C.UTF-8"}

    def _run(self, argv: list[str], what: str) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(argv, capture_output=True, text=True, env=self._env(),
                                  timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            raise PatchEngineError(f"{what} did not finish in {TIMEOUT}s") from None

    # -- rpm -----------------------------------------------------------------------
    def installed(self) -> list[Package]:
        """Every installed package of the root's rpm database."""
        if not (self.root / self.dbpath.lstrip("/")).is_dir():
            raise PatchEngineError(f"no RPM database at {self.dbpath} under {self.root}")
        argv = [_tool("rpm", "rpm"), "--root", str(self.root), "--dbpath", self.dbpath,
                "-qa", "--qf", QUERY_FORMAT]
        proc = self._run(argv, "rpm -qa")
        if proc.returncode != 0:
            raise PatchEngineError(f"rpm -qa failed: {proc.stderr.strip()[-500:]}")
        return [Package.parse_line(line) for line in proc.stdout.splitlines()
                if line.count("\t") == 4]

    # -- dnf -----------------------------------------------------------------------
    def dnf_argv(self, *args: str) -> list[str]:
        return [_tool("dnf", "dnf"), "-y", f"--installroot={self.root}",
                f"--config={self._config}", f"--releasever={self.releasever}",
                *self.repos.argv(), "--nogpgcheck",
                "--setopt=install_weak_deps=False", f"--setopt=cachedir={self.cache_dir}",
                "--setopt=reposdir=/dev/null", "--setopt=clean_requirements_on_remove=False",
                "--setopt=installonlypkgs=", "--setopt=skip_if_unavailable=False", *args]

    def available(self) -> list[Package]:
        """Every package of the enabled repos (metadata refreshed: repos change on apply)."""
        argv = self.dnf_argv("-q", "--refresh", "repoquery", "--available",
                             "--qf", DNF_QUERY_FORMAT)
        proc = self._run(argv, "dnf repoquery")
        if proc.returncode != 0:
            raise PatchEngineError("cannot read the repos "
                                   f"{', '.join(self.repos.urls())}: "
                                   f"{proc.stderr.strip()[-500:]}")
        return [Package.parse_line(line) for line in proc.stdout.splitlines()
                if line.count("\t") == 4]

    def transaction(self, commands: list[str], log: Path) -> DnfResult:
        """Run dnf shell ``commands`` (ending in ``run``) as one transaction."""
        LOG.info("dnf transaction in %s: %s", self.root, "; ".join(commands))
        script = self.cache_dir / "transaction.dnf"
        script.write_text("\n".join([*commands, "run", ""]))
        # --refresh: the repos changed since dnf last looked (every apply regenerates them)
        proc = self._run(self.dnf_argv("--refresh", "shell", str(script)), "dnf transaction")
        output = proc.stdout + proc.stderr
        _append(log, f"$ dnf shell\n{script.read_text()}{output}\n")
        failed = proc.returncode != 0 or any(m in output for m in FAILURE_MARKERS)
        return DnfResult(ok=not failed, output=output)

    def undo_last(self, log: Path) -> DnfResult:
        """Undo the newest dnf history transaction (the one that just failed)."""
        proc = self._run(self.dnf_argv("history", "undo", "last"), "dnf history undo")
        output = proc.stdout + proc.stderr
        _append(log, f"$ dnf history undo last\n{output}\n")
        return DnfResult(ok=proc.returncode == 0 and "Error: " not in output, output=output)

    def remove_stray_cache(self) -> None:
        """Remove what dnf leaves at ``<root>/<cache dir>`` (``expired_repos.json``).

        dnf keeps its cache where ``cachedir`` says but writes that one file under the
        installroot-prefixed path; in a customer's fresh root it is litter.
        """
        if self.root == Path("/") or self.cache_dir.is_relative_to(self.root):
            return
        stray = self.root / str(self.cache_dir).lstrip("/")
        (stray / "expired_repos.json").unlink(missing_ok=True)
        while stray != self.root and stray.is_dir() and not any(stray.iterdir()):
            stray.rmdir()
            stray = stray.parent


def _append(log: Path, text: str) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8") as handle:
        handle.write(text)
