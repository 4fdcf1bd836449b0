"""The subset of iPXE a simulated machine needs to network-boot like real firmware.

A real machine's PXE ROM gets a boot file name over DHCP, fetches it over TFTP
and, for iPXE, runs the script it chains to. ``Script.run`` does the same with
metalcast's real TFTP and HTTP boot servers: it interprets ``#!ipxe`` scripts
(``set``/``inc``/``isset``/``iseq``/``goto``/labels, ``chain``, ``kernel``,
``initrd``, ``imgfree``, ``boot``, ``echo``, ``sleep``, ``exit``, ``poweroff``,
``||``/``&&``), expands ``${mac}``, ``${mac:hexhyp}``, ``${net0/mac}`` and nested
``${net${netid}/mac}``, and downloads every kernel and initrd it is told to, so a
broken URL fails the boot exactly where iPXE would. ``sleep`` is shortened (the
lab fast-forwards pauses); the result says which kernel would start with which
command line.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import re
import time
import urllib.error
import urllib.parse
import urllib.request

import tftpy

LOG = logging.getLogger(__name__)

MAX_STEPS = 10000        # a looping script ends here instead of hanging the lab
MAX_CHAINS = 8
HTTP_TIMEOUT = 30.0
_VAR_RE = re.compile(r"\$\{([^${}]*)\}")


class BootError(Exception):
    """The script failed (a command failed without ``||``, a download failed...)."""


@dataclasses.dataclass
class Download:
    url: str
    size: int
    sha256: str


@dataclasses.dataclass
class BootResult:
    """How the script ended: ``boot`` (kernel + initrd), ``exit`` or ``poweroff``."""

    action: str
    kernel: Download | None = None
    cmdline: str = ""
    initrds: list[Download] = dataclasses.field(default_factory=list)
    scripts: list[str] = dataclasses.field(default_factory=list)   # URLs run, in order
    messages: list[str] = dataclasses.field(default_factory=list)  # ``echo`` output


class _Jump(Exception):
    def __init__(self, label: str):
        self.label = label


class _End(Exception):
    def __init__(self, action: str):
        self.action = action


def fetch(url: str, timeout: float = HTTP_TIMEOUT) -> bytes:
    """GET ``url`` over tftp:// (tftpy's client) or http(s):// (urllib)."""
    parts = urllib.parse.urlsplit(url)
    try:
        if parts.scheme == "tftp":
            return _tftp_get(parts.hostname or "", parts.port or 69, parts.path.lstrip("/"),
                             timeout)
        if parts.scheme in ("http", "https"):
            # Firmware talks to the boot servers directly, never via the host's http_proxy.
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            with opener.open(url, timeout=timeout) as response:
                return response.read()
    except (OSError, urllib.error.URLError, tftpy.TftpException) as exc:
        raise BootError(f"cannot fetch {url}: {exc}") from None
    raise BootError(f"cannot fetch {url}: unsupported URL scheme {parts.scheme!r}")


def _tftp_get(host: str, port: int, name: str, timeout: float) -> bytes:
    # tftpy logs every retry and error packet as ERROR; the boot events report them once.
    logging.getLogger("tftpy").setLevel(logging.CRITICAL)
    sink = io.BytesIO()
    # Bind the client to loopback when talking to loopback: nothing else can answer.
    local = "127.0.0.1" if host.startswith("127.") else ""
    client = tftpy.TftpClient(host, port, options={"blksize": 1468}, localip=local)
    client.download(name, sink, timeout=min(timeout, 5), retries=3)
    return sink.getvalue()


class Script:
    """Interpreter state for one boot: variables, the loaded kernel and initrds."""

    def __init__(self, macs: list[str], fetcher=fetch, sleep_scale: float = 0.01):
        self.base = ""
        self.vars: dict[str, object] = {}
        for index, mac in enumerate(macs):
            self.vars[f"net{index}/mac"] = mac.lower()
        if macs:
            self.vars["mac"] = macs[0].lower()
        self.fetch = fetcher
        self.sleep_scale = sleep_scale
        self.result = BootResult(action="exit")

    # -- entry point ---------------------------------------------------------
    def run(self, url: str) -> BootResult:
        """Fetch and run the script at ``url`` (what firmware does with its boot file)."""
        try:
            self._chain(url)
            self.result.action = "exit"          # the script ran off its end
        except _End as end:
            self.result.action = end.action
        return self.result

    def _chain(self, url: str) -> None:
        if len(self.result.scripts) >= MAX_CHAINS:
            raise BootError(f"more than {MAX_CHAINS} chained scripts")
        text = self.fetch(url).decode("utf-8", "replace")
        if not text.startswith("#!ipxe"):
            raise BootError(f"{url} is not an iPXE script (no #!ipxe line)")
        self.result.scripts.append(url)
        self.base = url
        self._execute(text.splitlines())

    def _execute(self, lines: list[str]) -> None:
        labels = {line.strip()[1:].split()[0]: n for n, line in enumerate(lines)
                  if line.strip().startswith(":") and len(line.strip()) > 1}
        pc, steps = 0, 0
        while pc < len(lines):
            steps += 1
            if steps > MAX_STEPS:
                raise BootError(f"script did not finish within {MAX_STEPS} steps")
            line = lines[pc].strip()
            pc += 1
            if not line or line.startswith(("#", ":")):
                continue
            try:
                if not self._line(line):
                    raise BootError(f"{line!r} failed")
            except _Jump as jump:
                if jump.label not in labels:
                    raise BootError(f"goto: no label {jump.label!r}") from None
                pc = labels[jump.label] + 1

    # -- one line: commands joined by || and && ------------------------------
    def _line(self, line: str) -> bool:
        words = line.split()
        status, op, command = True, None, list[str]()
        for word in words + [None]:
            if word in ("||", "&&", None):
                if op is None:
                    status = self._command(command)
                elif (op == "||" and not status) or (op == "&&" and status):
                    status = self._command(command) if command else True
                op, command = word, []
            else:
                command.append(word)
        return status

    def _command(self, words: list[str]) -> bool:
        if not words:
            return True
        name, args = words[0], [self.expand(w) for w in words[1:]]
        handler = COMMANDS.get(name)
        if handler is None:
            raise BootError(f"unsupported iPXE command {name!r}")
        return handler(self, args)

    def expand(self, word: str) -> str:
        """Expand ``${...}`` innermost first, so ``${net${netid}/mac}`` works."""
        while True:
            match = _VAR_RE.search(word)
            if match is None:
                return word
            word = word[:match.start()] + self._value(match.group(1)) + word[match.end():]

    def _value(self, ref: str) -> str:
        name, _, kind = ref.partition(":")
        value = self.vars.get(name)
        if value is None:
            return ""
        if kind == "hexhyp":
            return str(value).replace(":", "-")
        return str(value)

    # -- commands ------------------------------------------------------------
    def _set(self, args: list[str]) -> bool:
        if not args:
            return False
        name, _, kind = args[0].partition(":")
        value = " ".join(args[1:])
        self.vars[name] = int(value) if kind.startswith(("int", "uint")) and value else value
        return True

    def _inc(self, args: list[str]) -> bool:
        current = self.vars.get(args[0], 0) or 0
        self.vars[args[0]] = int(str(current)) + (int(args[1]) if len(args) > 1 else 1)
        return True

    def _goto(self, args: list[str]) -> bool:
        raise _Jump(args[0])

    def _chain_cmd(self, args: list[str]) -> bool:
        url, base = self._url(_strip_options(args)[0]), self.base
        try:
            self._chain(url)
        except BootError as exc:
            LOG.info("chain %s failed: %s", url, exc)
            return False
        finally:
            self.base = base
        return True          # the chained script ran off its end: carry on here

    def _kernel(self, args: list[str]) -> bool:
        args = _strip_options(args)
        try:
            self.result.kernel = self._download(args[0])
        except BootError as exc:
            LOG.info("%s", exc)
            return False
        self.result.cmdline = " ".join(args[1:])
        self.result.initrds = []
        return True

    def _initrd(self, args: list[str]) -> bool:
        try:
            self.result.initrds.append(self._download(_strip_options(args)[0]))
        except BootError as exc:
            LOG.info("%s", exc)
            return False
        return True

    def _boot(self, args: list[str]) -> bool:
        if self.result.kernel is None:
            return False
        raise _End("boot")

    def _imgfree(self, args: list[str]) -> bool:
        self.result.kernel, self.result.cmdline, self.result.initrds = None, "", []
        return True

    def _echo(self, args: list[str]) -> bool:
        self.result.messages.append(" ".join(args))
        return True

    def _sleep(self, args: list[str]) -> bool:
        time.sleep(float(args[0] if args else 1) * self.sleep_scale)
        return True

    def _url(self, ref: str) -> str:
        return urllib.parse.urljoin(self.base, ref)

    def _download(self, ref: str) -> Download:
        url = self._url(ref)
        data = self.fetch(url)
        return Download(url, len(data), hashlib.sha256(data).hexdigest())


def _strip_options(args: list[str]) -> list[str]:
    """Drop ``--autofree``, ``--name NAME`` and the like; at least one word must remain."""
    out, skip = list[str](), False
    for arg in args:
        if out:
            out.append(arg)      # after the URL: kernel parameters, kept verbatim
        elif skip:
            skip = False
        elif arg in ("--name", "-n", "--timeout", "-t"):
            skip = True
        elif not arg.startswith("-"):
            out.append(arg)
    if not out:
        raise BootError("missing URL")
    return out


def _raise_end(action: str):
    def command(script: Script, args: list[str]) -> bool:
        raise _End(action)
    return command


#: iPXE command -> handler(script, expanded args) -> success.
COMMANDS = {
    "set": Script._set, "inc": Script._inc, "goto": Script._goto,
    "isset": lambda s, a: bool(a and a[0]),
    "iseq": lambda s, a: len(a) == 2 and a[0] == a[1],
    "chain": Script._chain_cmd, "kernel": Script._kernel, "imgexec": Script._chain_cmd,
    "initrd": Script._initrd, "module": Script._initrd, "boot": Script._boot,
    "imgfree": Script._imgfree, "echo": Script._echo, "sleep": Script._sleep,
    "exit": _raise_end("exit"), "poweroff": _raise_end("poweroff"),
    "reboot": _raise_end("reboot"), "dhcp": lambda s, a: True, "ifconf": lambda s, a: True,
}


