"""Reading uploaded patches in a child process with limits, off the API's threads.

An uploaded ``.patch`` is hostile until its signatures check out, and parsing it
is CPU work in Python: in the server's process a crafted tar header held the GIL
for seconds to minutes, stalling every route, and SIGTERM waited for it. Here
archive.read runs in a child Python running this module's ``main``, which first limits
itself (address space, file size, no core dumps, killed with its parent) and
then reads one patch per request line with a CPU budget per patch, answering one
JSON line each: the verified metadata, the extracted RPM paths and the semantic
scripts, or the error. The parent kills it when a patch takes longer than the
wall-clock timeout, and re-checks what it is told (metadata validated again,
every path inside the work directory).

One child serves one upload request (a ``session``): ``upload_dir`` of many
patches pays the interpreter's start (~0.2 s) once. ``InProcessReader`` is the
twin for tools and unit tests that trust their input.
"""
from __future__ import annotations

import base64
import contextlib
import ctypes
import dataclasses
import json
import logging
import os
import resource
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from conductor import errors
from conductor.patching import archive, signing
from conductor.patching import metadata as md
from conductor.patching.metadata import PatchFormatError

LOG = logging.getLogger(__name__)
_PR_SET_PDEATHSIG = 1
#: The child's program: this module, from the tree the server runs (argv[1]), with
#: ``-I`` (no PYTHON* variables, user site or current directory on the path).
_CHILD = ("import sys; sys.path.insert(0, sys.argv[1]); "
          "from conductor.patching.unpack import main; sys.exit(main())")
_TREE = str(Path(__file__).resolve().parents[2])


@dataclasses.dataclass(frozen=True)
class ProcessLimits:
    """What reading one patch may use (a 1 GiB patch needs ~30 s of CPU)."""

    cpu_seconds: int = 300
    memory_bytes: int = 1 << 30
    wall_seconds: float = 600.0


class InProcessReader:
    """archive.read in this process: for trusted input (tools, unit tests)."""

    def __init__(self, limits: archive.Limits | None = None):
        self.limits = limits or archive.Limits()

    def session(self) -> contextlib.AbstractContextManager[InProcessReader]:
        return contextlib.nullcontext(self)

    def read(self, path: Path, trusted_dir: Path, workdir: Path) -> archive.PatchFile:
        return archive.read(path, signing.load_trusted(trusted_dir), workdir, self.limits)


class IsolatedReader:
    """archive.read in a limited child process; the server's reader of uploads."""

    def __init__(self, limits: archive.Limits | None = None,
                 process: ProcessLimits | None = None):
        self.limits = limits or archive.Limits()
        self.process = process or ProcessLimits()

    @contextlib.contextmanager
    def session(self) -> Iterator[_Child]:
        """A child for the patches of one request; stopped when the request ends."""
        child = _Child(self.limits, self.process)
        try:
            yield child
        finally:
            child.stop()

    def read(self, path: Path, trusted_dir: Path, workdir: Path) -> archive.PatchFile:
        with self.session() as child:
            return child.read(path, trusted_dir, workdir)


class _Child:
    """One reader process, started on the first read and again after it died."""

    def __init__(self, limits: archive.Limits, process: ProcessLimits):
        self.limits, self.process = limits, process
        self.proc: subprocess.Popen | None = None
        self.stderr: IO[bytes] | None = None

    def _start(self) -> subprocess.Popen:
        # stderr to a file: a pipe nobody drains could block the child.
        self.stderr = tempfile.TemporaryFile()
        proc = subprocess.Popen([sys.executable, "-I", "-c", _CHILD, _TREE],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=self.stderr, close_fds=True)
        assert proc.stdin is not None
        proc.stdin.write(json.dumps({"parent": os.getpid(),
                                     "limits": dataclasses.asdict(self.limits),
                                     "process": dataclasses.asdict(self.process)}).encode()
                         + b"\n")
        self.proc = proc
        return proc

    def stop(self) -> None:
        """Close its input (it exits), kill it if it does not at once, reap it."""
        proc, self.proc = self.proc, None
        if proc is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()      # type: ignore[union-attr]
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            proc.stdout.close()         # type: ignore[union-attr]
        if self.stderr is not None:
            self.stderr.close()
            self.stderr = None

    def _log_tail(self) -> str:
        if self.stderr is None:
            return ""
        self.stderr.seek(0, os.SEEK_END)
        self.stderr.seek(max(0, self.stderr.tell() - 2000))
        return self.stderr.read().decode(errors="replace")

    def read(self, path: Path, trusted_dir: Path, workdir: Path) -> archive.PatchFile:
        proc = self.proc or self._start()
        request = {"path": str(path), "trusted_dir": str(trusted_dir),
                   "workdir": str(workdir)}
        try:
            proc.stdin.write(json.dumps(request).encode() + b"\n")  # type: ignore[union-attr]
            proc.stdin.flush()                                       # type: ignore[union-attr]
        except BrokenPipeError:
            pass                # it died since the last patch: no answer says how
        try:
            line = _read_line(proc.stdout, self.process.wall_seconds)
        except TimeoutError:
            proc.kill()
            self.stop()
            raise PatchFormatError(reason=f"{path.name}: reading the patch took longer "
                                   f"than {self.process.wall_seconds:g} s; refused") from None
        except BaseException:   # a broken pipe, or the server stopping: no child stays
            proc.kill()
            self.stop()
            raise
        if not line:            # it died without an answer: say how
            code = proc.wait()
            LOG.error("Patch reader for %s exited with %s: %s", path.name, code,
                      self._log_tail())
            self.stop()
            raise PatchFormatError(reason=f"{path.name}: {_death(code, self.process)}")
        try:
            answer = json.loads(line)
        except ValueError:
            self.stop()
            raise PatchFormatError(reason=f"{path.name}: the patch reader's answer is "
                                   "garbled; refused") from None
        return self._answer(path, Path(workdir), answer)

    def _answer(self, path: Path, workdir: Path, answer: dict) -> archive.PatchFile:
        if answer.get("ok"):
            return _patch_file(answer, workdir)
        if answer.get("kind") == "nospace":
            raise errors.InsufficientStorage(path=workdir)
        if answer.get("kind") == "internal":
            LOG.error("Patch reader failed on %s: %s", path.name, self._log_tail())
        raise PatchFormatError(reason=str(answer.get("error", "the patch could not be read")))


def _read_line(stream: Any, timeout: float) -> bytes:
    """One line from the child's stdout within ``timeout`` s (b"" if it exited)."""
    deadline = time.monotonic() + timeout
    data = b""
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        while not data.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not selector.select(remaining):
                raise TimeoutError
            chunk = os.read(stream.fileno(), 1 << 16)
            if not chunk:
                return b""
            data += chunk
    return data


def _death(code: int, process: ProcessLimits) -> str:
    """Why a child that gave no answer died, in the operator's words."""
    if code in (-signal.SIGXCPU, -signal.SIGKILL):
        return (f"reading the patch used more than {process.cpu_seconds} s of CPU "
                "or was killed; refused")
    if code == -signal.SIGXFSZ:
        return "the patch expands to a file larger than allowed; refused"
    return f"the patch could not be read (reader exit status {code}); refused"


def _inside(workdir: Path, value: str) -> Path:
    path = Path(value)
    resolved = path.resolve()
    if not resolved.is_relative_to(workdir.resolve()) or path.is_symlink() or \
            not resolved.is_file():
        raise PatchFormatError(reason="the patch reader returned a path outside its "
                               f"work directory: {value!r}")
    return resolved


def _patch_file(answer: dict, workdir: Path) -> archive.PatchFile:
    """The child's answer, checked again: it read hostile input."""
    meta = md.PatchMetadata(**answer["metadata"])
    md.validate(meta)
    rpms = {name: _inside(workdir, value) for name, value in answer["rpms"].items()}
    if sorted(rpms) != sorted(rpm.file_basename for rpm in meta.rpms):
        raise PatchFormatError(reason="the patch reader's RPM list does not match "
                               "metadata.xml")
    semantics = {action: base64.b64decode(script)
                 for action, script in answer["semantics"].items()}
    if sorted(semantics) != sorted(meta.semantics):
        raise PatchFormatError(reason="semantics.tar does not match the <semantics> "
                               "actions of metadata.xml")
    return archive.PatchFile(meta, rpms, semantics, answer["signer"], workdir)


# -- the child ---------------------------------------------------------------------
def _limit_self(settings: dict) -> ProcessLimits:
    """Limits first, before a byte of a patch is read; die with the parent."""
    process = ProcessLimits(**settings["process"])
    limits = archive.Limits(**settings["limits"])
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_AS, (process.memory_bytes, process.memory_bytes))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits.total_bytes + (1 << 20),) * 2)
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))
    except (OSError, AttributeError):  # not Linux: the wall timeout still applies
        pass
    if os.getppid() != settings["parent"]:
        sys.exit(1)     # the parent died before prctl: nobody waits for the answer
    return process


def _cpu_budget(seconds: int) -> None:
    """SIGXCPU (which ends the process) once this patch used ``seconds`` of CPU."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    used = int(usage.ru_utime + usage.ru_stime) + 1
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = used + seconds if hard == resource.RLIM_INFINITY else min(used + seconds, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def _serve(request: dict, limits: archive.Limits, process: ProcessLimits) -> dict:
    workdir = Path(request["workdir"])
    try:
        loaded = archive.read(Path(request["path"]),
                              signing.load_trusted(Path(request["trusted_dir"])),
                              workdir, limits)
    except errors.InsufficientStorage:
        return {"ok": False, "kind": "nospace"}
    except errors.MetalcastError as exc:
        return {"ok": False, "kind": "format", "error": str(exc)}
    except MemoryError:
        return {"ok": False, "kind": "format", "error": "reading the patch needs more "
                f"than {process.memory_bytes >> 20} MiB of memory; refused"}
    except Exception as exc:    # a bug, or input nobody foresaw: say which
        LOG.exception("Reading %s failed", request["path"])
        return {"ok": False, "kind": "internal",
                "error": f"the patch could not be read: {type(exc).__name__}: {exc}"}
    return {"ok": True, "metadata": dataclasses.asdict(loaded.metadata),
            "rpms": {name: str(path) for name, path in loaded.rpms.items()},
            "semantics": {action: base64.b64encode(script).decode()
                          for action, script in loaded.semantics.items()},
            "signer": loaded.signer}


def main() -> int:
    """The child: settings on the first line, then one request per line until EOF."""
    settings = json.loads(sys.stdin.buffer.readline())
    process = _limit_self(settings)
    limits = archive.Limits(**settings["limits"])
    for line in sys.stdin.buffer:
        _cpu_budget(process.cpu_seconds)
        answer = _serve(json.loads(line), limits, process)
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
