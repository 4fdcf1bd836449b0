"""Boot config rendering: per-MAC iPXE, PXELINUX and GRUB files from ``pxe_templates``.

Every value a template prints must be a :class:`Checked` string, made by one of
the validators here: the Jinja environment refuses anything else. Operator and
user data thus reaches an iPXE script, a GRUB script or a kernel command line
only after it was either refused (URLs, kernel parameters: a ``$``, ``;``, quote,
space or newline could run commands in the boot loader or inject parameters) or
escaped (the node name, which is only shown in comments).

Files are written atomically (temporary file + ``os.replace`` in the same
directory) and only when their content changes, so rendering is idempotent and a
booting machine never reads half a file.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import jinja2

import pxe_templates
from conductor import errors

LOG = logging.getLogger(__name__)

TEMPLATE_DIR = Path(pxe_templates.__file__).parent

#: Kernel parameters: no whitespace, quotes, ``$``, ``;``, ``#``, braces or backslashes,
#: which iPXE, GRUB or PXELINUX would interpret.
_TOKEN_RE = re.compile(r"[A-Za-z0-9._:/,=@+%~-]+")
#: URLs: the same, plus what a plain URL needs (query, IPv6 brackets); no ``&`` or ``;``.
_URL_RE = re.compile(r"[A-Za-z0-9._:/?=@+%~,\[\]-]+")
_NAME_RE = re.compile(r"[A-Za-z0-9._+-]+(/[A-Za-z0-9._+-]+)*")
_MAC_RE = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
#: Words that mark a kernel parameter as a secret: never on a command line anyone can read.
_SECRET_WORDS = ("password", "passwd", "token", "secret", "private", "credential")
#: ``user[:password]@`` after a URL scheme: credentials, never printed in a boot config.
_USERINFO_RE = re.compile(r"://[^/?#]*@")
#: Kernel parameters metalcast sets itself (lower case, ``_`` as ``-``) -> what sets them.
#: An operator's copy would come later on the command line and win (the agent keeps the
#: last ``ipa-api-url``), so it is refused rather than rendered.
RESERVED_PARAMS = {
    "ipa-api-url": "[pxe] api_url (the API the agent calls)",
    "bootif": "the MAC of the NIC being booted",
    "initrd": "driver_info deploy_ramdisk",
}

#: Boot loader -> (root holding its per-MAC file, file name pattern, template).
NODE_FILES = {
    "ipxe": ("http", "ipxe/{hexhyp}.ipxe", "node.ipxe.j2"),
    "pxelinux": ("tftp", "pxelinux.cfg/01-{hexhyp}", "pxelinux.cfg.j2"),
    "grub": ("tftp", "grub/grub.cfg-01-{hexhyp}", "grub.cfg.j2"),
}
#: Files every machine may ask for before it has a node config: (root, path, template).
STATIC_FILES = (
    ("tftp", "boot.ipxe", "boot.ipxe.j2"),
    ("http", "boot.ipxe", "boot.ipxe.j2"),
    ("tftp", "pxelinux.cfg/default", "pxelinux_default.cfg.j2"),
    ("tftp", "grub/grub.cfg", "grub_default.cfg.j2"),
)
#: Boot loader binaries copied into the TFTP root: name -> candidate sources (first found).
#: The iPXE ones come with Debian's ipxe-qemu/ipxe packages; PXELINUX is optional.
LOADER_SOURCES = {
    "undionly.kpxe": ("/usr/lib/ipxe/undionly.kpxe",),
    "ipxe.efi": ("/usr/lib/ipxe/ipxe.efi",),
    "snponly.efi": ("/usr/lib/ipxe/snponly.efi",),
    "pxelinux.0": ("/usr/lib/PXELINUX/pxelinux.0",),
    "lpxelinux.0": ("/usr/lib/PXELINUX/lpxelinux.0",),
    "ldlinux.c32": ("/usr/lib/syslinux/modules/bios/ldlinux.c32",),
}
REQUIRED_LOADERS = ("undionly.kpxe", "ipxe.efi", "snponly.efi")
RETRIES = 10


class Checked(str):
    """A string validated (or escaped) for iPXE, GRUB, PXELINUX and kernel command lines."""


def checked_token(value, what: str) -> Checked:
    """One kernel parameter, refused (400) if a boot loader could interpret it."""
    text = str(value)
    if not _TOKEN_RE.fullmatch(text):
        raise errors.InvalidParameter(
            f"{what} {text!r} is not allowed on a kernel command line: use only letters, "
            "digits and . _ : / , = @ + % ~ - (no spaces, quotes, $, ;, # or newlines).")
    key = text.split("=", 1)[0].lower()
    if any(word in key for word in _SECRET_WORDS) or _USERINFO_RE.search(text):
        raise errors.InvalidParameter(
            f"{what} {key!r} looks like a secret; kernel command lines are readable by "
            "anyone on the machine and the network, so secrets never go there.")
    return Checked(text)


def checked_params(text, what: str) -> tuple[Checked, ...]:
    """Operator kernel parameters (space separated), each checked; none that metalcast
    sets itself (``RESERVED_PARAMS``), which would override the rendered one."""
    params = tuple(checked_token(p, what) for p in str(text or "").split())
    for param in params:
        key = param.split("=", 1)[0].lower().replace("_", "-")
        if key in RESERVED_PARAMS:
            raise errors.InvalidParameter(
                f"{what} must not set {param.split('=', 1)[0]!r}: metalcast sets it "
                f"from {RESERVED_PARAMS[key]}, and a second value would override it.")
    return params


def checked_url(value, what: str, schemes: tuple[str, ...] = ("http", "https")) -> Checked:
    """An absolute URL safe to print in a boot config (refused otherwise)."""
    text = str(value).rstrip("/")
    if _USERINFO_RE.search(text):
        # Boot scripts and configs are served to anyone who asks, over plain HTTP and
        # TFTP: a password in them is a password published. Refused, not stripped: a
        # stripped URL would fail later at download time, on the machine, unexplained.
        # The message does not repeat the URL (it would repeat the password).
        raise errors.InvalidParameter(
            f"{what} carries credentials (user:password@ before the host); boot configs "
            "are readable by anyone on the provisioning network. Serve the file without "
            "authentication, e.g. from the HTTP boot root.")
    try:
        parts = urlsplit(text)
    except ValueError:  # e.g. a broken IPv6 literal
        parts = urlsplit("")
    if parts.scheme not in schemes or not parts.netloc or not _URL_RE.fullmatch(text):
        raise errors.InvalidParameter(
            f"{what} {text!r} must be a {' or '.join(schemes)} URL made of letters, digits "
            "and . _ : / ? = @ + % ~ , [ ] - only.")
    return Checked(text)


def checked_name(value, what: str) -> Checked:
    """A file name relative to a boot root: no ``..``, no leading ``/``, safe characters."""
    text = str(value)
    if not _NAME_RE.fullmatch(text) or any(part in (".", "..") for part in text.split("/")):
        raise errors.InvalidParameter(
            f"{what} {text!r} must be a URL or a file name relative to the boot root "
            "(letters, digits, . _ + - and /, no '..').")
    return Checked(text)


def label(name) -> Checked:
    """Escape a node name for display in comments: other characters become '_'."""
    return Checked(re.sub(r"[^A-Za-z0-9._-]", "_", str(name or ""))[:63] or "-")


def hexhyp(mac: str) -> str:
    """``AA:BB:..`` -> ``aa-bb-..``, the form iPXE's ``${mac:hexhyp}`` and PXELINUX use."""
    text = str(mac).strip().lower()
    if not _MAC_RE.fullmatch(text):
        raise errors.InvalidParameter(f"{mac!r} is not a MAC address.")
    return text.replace(":", "-")


@dataclasses.dataclass(frozen=True)
class NodeBoot:
    """What one node's boot configs say: rendered once per MAC."""

    uuid: str
    name: str | None
    macs: tuple[str, ...]
    loader: str                 # a key of NODE_FILES
    kernel: Checked             # already in the loader's syntax (see locate())
    ramdisk: Checked
    params: tuple[Checked, ...]  # kernel parameters; BOOTIF is added per MAC


def locate(value: str, loader: str, http_url: str, what: str) -> Checked:
    """Kernel/ramdisk reference in ``loader``'s syntax: a URL or a name in the boot root.

    iPXE fetches everything over HTTP; PXELINUX and GRUB read relative names over
    TFTP (the renderer links them into the TFTP root) and URLs over HTTP
    (``lpxelinux.0``; GRUB's ``(http,host:port)/path`` device syntax).
    """
    if "://" in str(value):
        schemes = ("http", "https") if loader == "ipxe" else ("http",)
        url = checked_url(value, what, schemes)
        if loader == "grub":
            parts = urlsplit(url)
            if parts.query:
                # GRUB's (http,host) device takes a file path, not a URL: a query string
                # would be dropped (the wrong file fetched) or globbed by GRUB's script
                # parser (regexp is loaded by grub.cfg), so it is refused.
                raise errors.InvalidParameter(
                    f"{what} {url!r} has a query string, which GRUB (UEFI pxe boot) cannot "
                    "send: use a URL without '?', or the ipxe boot interface.")
            return Checked(f"(http,{parts.netloc}){parts.path or '/'}")
        return url
    name = checked_name(value, what)
    return {"ipxe": Checked(f"{http_url}/{name}"), "pxelinux": name,
            "grub": Checked(f"/{name}")}[loader]


def _only_checked(value):
    """Jinja ``finalize``: print only validated values, so no template prints raw input."""
    if isinstance(value, (Checked, int, jinja2.Undefined)) and not isinstance(value, bool):
        return value  # an Undefined raises (StrictUndefined) when printed
    raise errors.InvalidParameter(f"boot template printed an unchecked value {value!r}")


def write_atomic(path: Path, text: str) -> bool:
    """Write ``text`` to ``path`` via a temporary file in the same directory.

    Returns False (and touches nothing) when the file already holds ``text``.
    """
    try:
        if path.read_text() == text:
            return False
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


class Renderer:
    """Owns the templates and the boot roots of one appliance process."""

    def __init__(self, tftp_root: Path, http_root: Path, http_url: str,
                 template_dir: Path = TEMPLATE_DIR):
        self.roots = {"tftp": Path(tftp_root), "http": Path(http_root)}
        self.http_url = checked_url(http_url, "[pxe] http_url", ("http",))
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(template_dir)), autoescape=False,
            undefined=jinja2.StrictUndefined, finalize=_only_checked,
            keep_trailing_newline=True)
        self._templates: dict[str, jinja2.Template] = {}

    def check_templates(self) -> None:
        """Compile every template and render it with sample values (at start-up).

        A broken template thus stops ``metalcast serve`` with its name and line,
        instead of failing the first machine that tries to boot.
        """
        sample = NodeBoot("00000000-0000-0000-0000-000000000000", "sample",
                          ("52:54:00:00:00:01",), "ipxe", Checked("http://h/k"),
                          Checked("http://h/r"), (Checked("ipa-api-url=http://h:6385"),))
        names = [t for _, _, t in STATIC_FILES] + [t for _, _, t in NODE_FILES.values()]
        for name in dict.fromkeys(names):
            try:
                self._templates[name] = self.env.get_template(name)
                self._render(name, sample, sample.macs[0])
            except (jinja2.TemplateError, errors.MetalcastError) as exc:
                line = getattr(exc, "lineno", None)
                where = f" line {line}" if line else ""
                folder = getattr(self.env.loader, "searchpath", ["?"])[0]
                raise errors.ConfigError(
                    reason=f"boot template {folder}/{name}{where}: {exc}") from None

    def _render(self, name: str, boot: NodeBoot | None, mac: str | None) -> str:
        template = self._templates.get(name) or self.env.get_template(name)
        values = {"http_url": self.http_url, "retries": RETRIES}
        if boot is not None:
            assert mac is not None  # a node's config is rendered for one of its MACs
            params = list(boot.params)
            if boot.loader != "pxelinux":  # PXELINUX adds BOOTIF itself (IPAPPEND 2)
                params.append(Checked(f"BOOTIF=01-{hexhyp(mac)}"))
            values.update(node_uuid=label(boot.uuid), node_label=label(boot.name),
                          mac=Checked(hexhyp(mac).replace("-", ":")), kernel=boot.kernel,
                          ramdisk=boot.ramdisk, params=Checked(" ".join(params)))
        return template.render(values)

    def install(self) -> None:
        """Create the roots, write the generic configs and copy the boot loaders."""
        for root in self.roots.values():
            root.mkdir(parents=True, exist_ok=True)
        for root_name, path, template in STATIC_FILES:
            write_atomic(self.roots[root_name] / path, self._render(template, None, None))
        for name, sources in LOADER_SOURCES.items():
            source = next((Path(s) for s in sources if Path(s).is_file()), None)
            if source is None:
                if name in REQUIRED_LOADERS:
                    LOG.warning("Boot loader %s not found (%s); install Debian package "
                                "ipxe-qemu or ipxe", name, ", ".join(sources))
                continue
            _copy_if_changed(source, self.roots["tftp"] / name)

    def node_paths(self, mac: str) -> list[Path]:
        """Every per-MAC file any loader could have for ``mac``."""
        return [self.roots[root] / pattern.format(hexhyp=hexhyp(mac))
                for root, pattern, _ in NODE_FILES.values()]

    def write(self, boot: NodeBoot) -> list[Path]:
        """Render ``boot`` for each of its MACs; returns the paths that changed."""
        root, pattern, template = NODE_FILES[boot.loader]
        changed = []
        for mac in boot.macs:
            path = self.roots[root] / pattern.format(hexhyp=hexhyp(mac))
            if write_atomic(path, self._render(template, boot, mac)):
                changed.append(path)
        for ref in (boot.kernel, boot.ramdisk):
            if boot.loader != "ipxe" and "://" not in ref and not ref.startswith("("):
                self._publish_to_tftp(ref.lstrip("/"))
        # A node that switched loader (boot mode) must not keep the other loader's files.
        own = {self.roots[root] / pattern.format(hexhyp=hexhyp(m)) for m in boot.macs}
        self.remove(boot.macs, keep=own)
        LOG.info("Node %s: %s boot config for %s (%d changed)", boot.uuid, boot.loader,
                 ", ".join(boot.macs), len(changed))
        return changed

    def remove(self, macs, keep=frozenset()) -> list[Path]:
        """Delete every per-MAC file of ``macs`` (except ``keep``); returns what went."""
        removed = []
        for mac in macs:
            for path in self.node_paths(mac):
                if path in keep:
                    continue
                try:
                    path.unlink()
                    removed.append(path)
                except FileNotFoundError:
                    pass
        return removed

    def _publish_to_tftp(self, name: str) -> None:
        """Make a kernel/ramdisk stored in the HTTP root readable over TFTP too (hard link)."""
        source, target = self.roots["http"] / name, self.roots["tftp"] / name
        if target.exists() or not source.is_file():
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source, target)
        except FileExistsError:  # another node's deploy linked it just now
            pass
        except OSError:  # another file system: copy (atomically) instead
            _copy_if_changed(source, target)


def _copy_if_changed(source: Path, target: Path) -> None:
    stat = source.stat()
    try:
        current = target.stat()
        if current.st_size == stat.st_size and current.st_mtime >= stat.st_mtime:
            return
    except FileNotFoundError:
        pass
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    os.close(fd)
    shutil.copy2(source, tmp)
    os.chmod(tmp, 0o644)
    os.replace(tmp, target)
