"""The network boot side of one appliance: boot roots, templates, TFTP and HTTP servers.

Created by the appliance and shared with the boot interfaces through the
DriverContext (``context.netboot``). ``start()`` binds the servers (when
``[pxe] enabled``), checks every template and installs the generic files, so a
broken template or a port that cannot be bound stops ``metalcast serve`` before
it reports ready.
"""
from __future__ import annotations

import errno
import ipaddress
import logging
from pathlib import Path

from conductor import errors
from conductor.netboot import dhcp, limits, render
from conductor.netboot.dhcp_options import BootServer
from conductor.netboot.http import BootHttpServer
from conductor.netboot.render import Renderer, checked_url
from conductor.netboot.tftp import TftpServer, TransferRecorder

LOG = logging.getLogger(__name__)

BOOT_MODES = ("bios", "uefi")
#: errno -> what to tell the operator when a boot server cannot bind.
BIND_HINTS = {
    errno.EACCES: "ports below 1024 need root or CAP_NET_BIND_SERVICE",
    errno.EADDRINUSE: "another process already listens there",
    errno.EADDRNOTAVAIL: "no interface has this address",
}
_UNSPECIFIED = ("", "0.0.0.0", "::")


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class NetbootServices:
    """Boot roots + renderer + (optionally) the TFTP and HTTP servers of this process."""

    def __init__(self, settings, on_transfer: TransferRecorder | None = None):
        self.settings = settings
        #: Told of each boot transfer's end (the boot metrics, conductor/metrics/boot.py).
        self.on_transfer = on_transfer
        if settings.pxe.default_boot_mode not in BOOT_MODES:
            raise errors.ConfigError(reason=f"[pxe] default_boot_mode must be bios or uefi, "
                                            f"not {settings.pxe.default_boot_mode!r}")
        try:
            self.http_limits, self.tftp_limits = limits.from_pxe_settings(settings.pxe)
        except ValueError as exc:
            raise errors.ConfigError(reason=str(exc)) from None
        _check_boot_defaults(settings.pxe)
        data = settings.data_path
        self.tftp_root = Path(settings.pxe.tftp_root or data / "tftpboot").expanduser()
        self.http_root = Path(settings.pxe.http_root or data / "httpboot").expanduser()
        self.renderer: Renderer | None = None
        self.http_url = ""
        self.api_url = ""
        self._api_url: str | None = None  # where the API listens, told by start()
        self.http: BootHttpServer | None = None
        self.tftp: TftpServer | None = None
        self._started = False

    def start(self, api_url: str | None = None) -> list[str]:
        """Bind the servers and prepare the roots; idempotent. Returns lines to print."""
        if not self._started:
            self._api_url = api_url or self._api_url
            try:
                if self.settings.pxe.enabled:
                    self._bind()
                    self.prepare()
                else:  # rendering may still serve someone else's TFTP/HTTP servers
                    self._prepare_if_possible()
            except BaseException:
                self.stop()
                raise
            self._started = True
        return self.describe()

    def _prepare_if_possible(self) -> None:
        # Templates are checked in any case: a broken one must stop the start.
        Renderer(self.tftp_root, self.http_root, "http://template-check").check_templates()
        try:
            self.prepare()
        except errors.ConfigError as exc:
            # Boot servers off and no usable URL: only pxe/ipxe nodes are affected, and
            # their validate/deploy report this same message.
            LOG.warning("Network boot configs cannot be rendered yet: %s", exc)

    def describe(self) -> list[str]:
        lines = []
        if self.tftp is not None:
            host = _url_host(self.settings.pxe.tftp_host or self.settings.api.host)
            lines.append(f"metalcast TFTP boot server on tftp://{host}:{self.tftp.port}/ "
                         f"(root {self.tftp_root})")
        if self.http is not None:
            lines.append(f"metalcast HTTP boot server on {self.http.url}/ "
                         f"(root {self.http_root}, boot URL {self.http_url}/boot.ipxe)")
        return lines

    def prepare(self) -> Renderer:
        """Check the templates and install the generic files (no servers needed)."""
        if self.renderer is None:
            self.api_url = self._agent_api_url()
            self.http_url = self._http_url()
            renderer = Renderer(self.tftp_root, self.http_root, self.http_url)
            renderer.check_templates()
            renderer.install()
            self.renderer = renderer
        return self.renderer

    def boot_server(self) -> BootServer | None:
        """This conductor's boot server as its nodes' DHCP entries name it: ``[dhcp]
        boot_server``, else ``[pxe] tftp_host`` (an IPv4 address; Ironic's per-conductor
        ``[pxe] tftp_server``), with the iPXE URL of this conductor's HTTP root. None:
        neither is set, the dnsmasq-wide rules name the boot server."""
        settings = self.settings
        for candidate in (settings.dhcp.boot_server, settings.pxe.tftp_host):
            if _is_ipv4(candidate) and candidate not in _UNSPECIFIED:
                self.prepare()   # http_url: the running HTTP boot server's
                return BootServer(candidate, dhcp.ipxe_url(settings, self.http_url))
        return None

    def _agent_api_url(self) -> str:
        """``ipa-api-url``: [pxe] api_url, [api] public_endpoint, or where the API listens."""
        settings = self.settings
        url = settings.pxe.api_url or settings.api.public_endpoint
        if not url:
            if settings.api.host in _UNSPECIFIED:
                raise errors.ConfigError(reason=f"[api] host is {settings.api.host!r}: "
                                                "agents cannot call that; set [pxe] api_url")
            url = self._api_url or f"http://{_url_host(settings.api.host)}:{settings.api.port}"
        return checked_url(url, "[pxe] api_url")

    def _http_url(self) -> str:
        settings = self.settings
        if settings.pxe.http_url:
            return checked_url(settings.pxe.http_url, "[pxe] http_url", ("http",))
        host = settings.pxe.http_host or settings.api.host
        if host in _UNSPECIFIED:
            raise errors.ConfigError(reason=f"[pxe] http_host is {host!r}: machines cannot "
                                            "reach that; set [pxe] http_url to the URL they use")
        port = self.http.port if self.http is not None else settings.pxe.http_port
        return f"http://{_url_host(host)}:{port}"

    def _bind(self) -> None:
        settings = self.settings
        host = settings.pxe.http_host or settings.api.host
        self.http = BootHttpServer(self.http_root, host, settings.pxe.http_port,
                                   self.http_limits, self.on_transfer)
        self.http_root.mkdir(parents=True, exist_ok=True)
        self.tftp_root.mkdir(parents=True, exist_ok=True)
        _bind_or_explain(self.http.start, "HTTP", host, settings.pxe.http_port, "http_port")
        tftp_host = settings.pxe.tftp_host or settings.api.host
        self.tftp = TftpServer(self.tftp_root, tftp_host, settings.pxe.tftp_port,
                               limits=self.tftp_limits, on_transfer=self.on_transfer)
        _bind_or_explain(self.tftp.start, "TFTP", tftp_host, settings.pxe.tftp_port,
                         "tftp_port")

    def open_sessions(self) -> dict[str, int]:
        """TFTP transfers and HTTP connections open now (0 while not serving)."""
        return {"tftp": self.tftp.session_count() if self.tftp is not None else 0,
                "http": self.http.open_connections() if self.http is not None else 0}

    def stop(self) -> None:
        for server in (self.tftp, self.http):
            if server is not None:
                try:
                    server.stop()
                except Exception:  # stopping must go on for the others
                    LOG.exception("Stopping %s failed", server)
        self.tftp = self.http = None
        self._started = False


def _is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def _check_boot_defaults(pxe) -> None:
    """The [pxe] defaults every node's boot config may use, checked at start-up as each
    node's would be (a credential in a URL, a parameter metalcast sets itself)."""
    try:
        render.checked_params(pxe.kernel_append_params, "[pxe] kernel_append_params")
        for option in ("deploy_kernel", "deploy_ramdisk"):
            if "://" in getattr(pxe, option):
                render.checked_url(getattr(pxe, option), f"[pxe] {option}")
    except errors.InvalidParameter as exc:
        raise errors.ConfigError(reason=str(exc)) from None


def _bind_or_explain(start, what: str, host: str, port: int, option: str) -> None:
    """Run ``start``; a bind failure becomes a ConfigError that says what to set."""
    try:
        start()
    except OSError as exc:
        hint = BIND_HINTS.get(exc.errno or 0, exc.strerror or str(exc))
        raise errors.ConfigError(reason=(
            f"cannot listen for {what} boot on {host} port {port}: {hint} ({exc.strerror}). "
            f"Set [pxe] {option} (or METALCAST_PXE_{option.upper()}) to a free port, or "
            f"[pxe] enabled = false to run without the boot servers.")) from None
