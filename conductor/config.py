"""One settings object, read from a config file, the environment and flags.

Each INI section is a dataclass (``[api]`` is :class:`ApiSettings`) and one attribute of
:class:`Settings` (``settings.api.host`` is ``[api] host``); ``data_dir`` is the one
``[DEFAULT]`` key. Precedence (lowest first): built-in defaults, the INI file
(``--config-file``, ``$METALCAST_CONFIG`` or ``<data-dir>/metalcast.conf``), environment
variables ``METALCAST_<SECTION>_<KEY>`` (plus the short ``METALCAST_HOST``,
``METALCAST_PORT``, ``METALCAST_DATA_DIR``), then explicit overrides (CLI flags) named
``section.key`` (``"api.port"``) or ``data_dir``. Text from the file and the environment
is converted by the field's declared type; a bad value is refused with its section, key
and expected type.
"""
from __future__ import annotations

import configparser
import dataclasses
import ipaddress
import logging
import os
import socket
import stat
import typing
from pathlib import Path

from conductor.errors import ConfigError

LOG = logging.getLogger(__name__)

DEFAULT_DATA_DIR = "~/.local/share/metalcast"
#: The data dir holds the database and the secrets key: its owner only.
DATA_DIR_MODE = 0o700

#: Environment shortcuts users type most.
ENV_ALIASES = {"METALCAST_HOST": ("api", "host"), "METALCAST_PORT": ("api", "port"),
               "METALCAST_DATA_DIR": ("DEFAULT", "data_dir")}
#: ``[DEFAULT]`` keys Ironic reads there and metalcast keeps in [conductor]; the
#: [conductor] spelling wins when a file has both.
DEFAULT_ALIASES = {key: ("conductor", key) for key in (
    "host", "hash_partition_exponent", "hash_distribution_replicas",
    "hash_ring_reset_interval")}


@dataclasses.dataclass(frozen=True)
class ApiSettings:
    """``[api]``: the REST API server."""

    host: str = "127.0.0.1"
    port: int = 6385
    auth_strategy: str = "none"          # none | http_basic
    htpasswd_file: str = ""              # default: <data_dir>/htpasswd
    # Bounds checked before authentication (api/limits.py, api/http_server.py,
    # api/throttle.py); every listener of `metalcast serve` has them.
    max_request_body_size: int = 114688  # bytes of a request body (Ironic's 112 KiB);
                                         # a patch upload or config drive may be larger
    max_connections: int = 1000          # open connections, all clients together
    max_connections_per_client: int = 64  # open connections from one address (IPv6: /64)
    header_timeout: float = 10           # s a connection may wait for a request's headers
    auth_max_concurrent_checks: int = 4  # bcrypt checks at once (the API has 8 threads)
    auth_checks_per_client: int = 2      # bcrypt checks at once for one address
    auth_failures_before_backoff: int = 5  # wrong passwords in a row, then waits of
    auth_max_backoff: float = 60         # 1, 2, 4 ... s, at most this, per address
    max_limit: int = 1000
    public_endpoint: str = ""
    vim_port: int = 0                    # also serve the orchestration API (sw-manager)
                                         # on this port of [api] host, as StarlingX's VIM
                                         # on 4545; 0: on the API port only


@dataclasses.dataclass(frozen=True)
class DatabaseSettings:
    """``[database]``: where the node records live."""

    connection: str = ""                 # default: sqlite in data_dir
    auto_upgrade: bool = True


@dataclasses.dataclass(frozen=True)
class ConductorSettings:
    """``[conductor]``: workers, limits, timeouts and periodic tasks."""

    host: str = dataclasses.field(default_factory=socket.gethostname)
    workers: int = 16
    max_queued: int = 256
    max_concurrent_deploy: int = 250
    max_concurrent_clean: int = 50
    deploy_callback_timeout: int = 1800
    clean_callback_timeout: int = 1800
    inspect_wait_timeout: int = 1800
    rescue_callback_timeout: int = 1800
    service_callback_timeout: int = 1800
    check_provision_state_interval: int = 60
    # Membership and the hash ring (conductor/cluster/; Ironic's names and defaults).
    # host is also Ironic's [DEFAULT] host; the hash_* options are also read from
    # [DEFAULT], where Ironic has them (DEFAULT_ALIASES).
    conductor_group: str = ""                # the group this conductor serves
    # What `metalcast serve --role` runs: all (API + conductor), api (REST only: hands
    # every node's work to its conductor through the database), conductor (no REST).
    role: str = "all"
    heartbeat_interval: int = 10             # s between two heartbeats of this conductor
    heartbeat_timeout: int = 60              # s without a heartbeat: a conductor is dead
    hash_partition_exponent: int = 5         # 2**5 points per conductor on the ring
    hash_distribution_replicas: int = 1      # conductors a node maps to (primary first)
    hash_ring_reset_interval: float = 15     # s a ring is used before it is rebuilt
    automated_clean: bool = True
    enabled_hardware_types: str = "fake-hardware,ipmi,redfish"
    allow_deleting_available_nodes: bool = True
    # Power-state sync (Ironic's [conductor] options; conductor/engine/power_sync.py).
    sync_power_state_interval: float = 60    # seconds between sweeps; 0 disables
    sync_power_state_workers: int = 8        # BMCs queried in parallel per sweep
    force_power_state_during_sync: bool = False  # push the recorded state instead
    power_state_sync_max_retries: int = 3    # failed sweeps before maintenance

    @property
    def hardware_types(self) -> list[str]:
        """``enabled_hardware_types`` as a list."""
        return [h.strip() for h in self.enabled_hardware_types.split(",") if h.strip()]


#: What ``metalcast serve --role`` may run ([conductor] role).
ROLES = ("all", "api", "conductor")


@dataclasses.dataclass(frozen=True)
class SecretsSettings:
    """``[secrets]``: the key that encrypts BMC passwords at rest."""

    key_file: str = ""                   # default: <data_dir>/keys/secrets.key


@dataclasses.dataclass(frozen=True)
class RedfishSettings:
    """``[redfish]``: the Redfish (sushy) driver, Ironic's [redfish] options, with bounds
    that keep a dead BMC from holding a worker for minutes."""

    power_state_change_timeout: int = 60   # seconds to wait for On/Off to show
    power_poll_interval: float = 0.5         # seconds between power state reads
    connect_timeout: float = 10.0            # TCP connect timeout per request
    read_timeout: float = 60.0               # response timeout per request
    connection_attempts: int = 3             # tries on connection errors / GET 5xx
    connection_retry_interval: float = 2.0   # seconds between those tries
    auth_type: str = "auto"                  # default for driver_info.redfish_auth_type
    connection_cache_size: int = 1000        # cached sushy sessions per process


@dataclasses.dataclass(frozen=True)
class IpmiSettings:
    """``[ipmi]``: the IPMI (pyghmi) driver, Ironic's [ipmi] options.

    Commands to one BMC are serialised and spaced; Ironic's 5 s spacing protects BMCs
    from a new ipmitool session per command, while pyghmi keeps one session open, so 1 s
    is enough here.
    """

    min_command_interval: float = 1.0    # seconds between two commands to one BMC
    command_timeout: float = 20.0        # hard bound on one IPMI exchange (incl. login)
    login_timeout: float = 10.0          # bound on an RMCP+ login (capped by the above)
    max_concurrent_logins: int = 8       # RMCP+ logins in flight at once; others queue
    command_retry_timeout: float = 60.0  # retrying busy/timeout errors stops after this
    power_state_timeout: float = 60.0    # wait for the BMC to report the new power state
    session_max_age: float = 300.0       # s a session is reused before a new login checks
                                         # the credentials again; 0: log in per command


@dataclasses.dataclass(frozen=True)
class DnsSettings:
    """``[dns]``: DNS registration (conductor/dns/rfc2136.py, conductor/dns/registration.py),
    RFC 2136 UPDATE of A/AAAA + PTR when a node becomes active, removed on undeploy."""

    server: str = ""                      # IP or host name of the primary; empty disables
    port: int = 53
    zone: str = ""                        # forward zone; host = <node name label>.<zone>
    reverse_zone_v4: str = ""             # empty: the server's zone cut (SOA query) decides
    reverse_zone_v6: str = ""             # likewise, under ip6.arpa
    tsig_key_name: str = ""               # empty (with no secret): unsigned updates
    tsig_secret: str = dataclasses.field(default="", repr=False)  # base64; never logged
    tsig_algorithm: str = "hmac-sha256"
    ttl: int = 300
    timeout: float = 5.0                  # seconds per DNS exchange
    protocol: str = "udp"                 # udp (TCP on truncation) | tcp
    retry_interval: float = 60.0          # seconds between retries of failed updates


@dataclasses.dataclass(frozen=True)
class AgentSettings:
    """``[agent]``: the `direct` deploy interface and the ramdisk endpoints (Ironic's
    [agent] and [api] ramdisk options; conductor/service/ramdisk.py, agent_client.py,
    deploy.py)."""

    require_tls: bool = True            # refuse plain-http agent callback URLs
    heartbeat_timeout: int = 300        # told to the agent at lookup; it beats every 30-60 %
    command_timeout: float = 60.0       # one HTTP request to the agent's command API
    max_command_attempts: int = 3       # tries on connection errors (not on HTTP errors)
    command_wait_interval: float = 2.0  # polling of synchronous waits (install_bootloader)
    command_wait_attempts: int = 100    # ... up to this many polls
    post_deploy_power_off_wait: float = 30.0  # wait for the agent's own power-off, then force it
    image_head_timeout: float = 10.0    # HEAD on an http(s) image_source before deploying


@dataclasses.dataclass(frozen=True)
class DeploySettings:
    """``[deploy]``: automated-clean priorities of the agent's steps (Ironic's [deploy]
    options); 0 skips. A full erase_devices shreds whole disks (hours), so it runs only
    when asked."""

    erase_devices_priority: int = 0
    erase_devices_metadata_priority: int = 99


@dataclasses.dataclass(frozen=True)
class PxeSettings:
    """``[pxe]``: network boot (conductor/netboot/, drivers/pxe.py), the TFTP + HTTP boot
    servers and the per-MAC iPXE/PXELINUX/GRUB configs of the pxe and ipxe boot
    interfaces."""

    enabled: bool = True                  # run the TFTP and HTTP boot servers here
    tftp_root: str = ""                   # default: <data_dir>/tftpboot
    http_root: str = ""                   # default: <data_dir>/httpboot
    tftp_host: str = ""                   # default: [api] host
    tftp_port: int = 69                   # 0: any free port (tests)
    http_host: str = ""                   # default: [api] host
    http_port: int = 8080                 # 0: any free port (tests)
    http_url: str = ""                    # URL machines use for the HTTP root; default host:port
    api_url: str = ""                     # ipa-api-url for the agent; default: the API's URL
    deploy_kernel: str = ""               # default driver_info.deploy_kernel: URL or HTTP-root name
    deploy_ramdisk: str = ""              # likewise for deploy_ramdisk
    kernel_append_params: str = "nofb vga=normal"  # extra kernel parameters (never secrets)
    default_boot_mode: str = "bios"       # bios (PXELINUX) | uefi (GRUB) when a node says nothing
    # Bounds on what boot clients may hold (conductor/netboot/limits.py); all > 0.
    http_max_connections: int = 256       # open HTTP boot connections in total
    http_connections_per_client: int = 16  # ... from one client address
    http_idle_timeout: float = 15.0       # s an HTTP connection may wait for a request
    http_header_timeout: float = 10.0     # s from a request's first byte to its whole head
    tftp_max_sessions: int = 256          # live TFTP transfers in total
    tftp_sessions_per_client: int = 4     # ... from one client address
    tftp_max_timeout: int = 5             # RFC 2349 timeout option honoured up to this (s)
    tftp_session_lifetime: float = 900.0  # s after which a TFTP transfer is ended


@dataclasses.dataclass(frozen=True)
class DhcpSettings:
    """``[dhcp]``: per-MAC dnsmasq host entries that pick the boot loader
    (conductor/netboot/dhcp.py); `managed` runs our own dnsmasq on one interface,
    `hostsdir` only writes the entries into the dhcp-hostsdir of a dnsmasq someone else
    runs."""

    mode: str = "none"                   # none | managed | hostsdir
    interface: str = ""                  # managed: the interface dnsmasq serves
    range: str = ""                      # managed: start,end[,netmask][,lease time]
    ipv6_ra: str = "auto"                # auto (RA when the interface has IPv6) | on | off
    hostsdir: str = ""                   # default: <data_dir>/dhcp/hosts.d
    optsdir: str = ""                    # each entry's own boot options (its conductor's
                                         # boot server); default: opts.d beside hostsdir
    leasefile: str = ""                  # default: <data_dir>/dhcp/dnsmasq.leases
    unknown_hosts: str = "ignore"        # ignore | inspect (unknown MACs get the iPXE chain)
    boot_server: str = ""                # next-server (TFTP) IP; default: dnsmasq's own address
    ipxe_url: str = ""                   # sent to iPXE; default: <pxe http_url>/boot.ipxe
    bios_loader: str = "undionly.kpxe"   # ipxe interface, legacy BIOS PXE ROMs
    uefi_loader: str = "ipxe.efi"        # ipxe interface, UEFI x86-64 (client arch 7/9)
    pxe_bios_loader: str = "pxelinux.0"  # pxe interface, legacy BIOS
    pxe_uefi_loader: str = "grubx64.efi"  # pxe interface, UEFI x86-64
    log_dhcp: bool = False               # managed: dnsmasq logs every DHCP exchange
    ping: bool = True                    # managed: ping a new address before offering it
                                         # (~3 s per new lease); false = dnsmasq no-ping


@dataclasses.dataclass(frozen=True)
class PatchingSettings:
    """``[patching]``: StarlingX sw-patch semantics (conductor/patching/) and its REST
    API under /patch/, /v1/ and /patching/v1/ (api/starlingx/patching.py), served on the
    main API port and on a patching listener of its own, StarlingX's local API port."""

    enabled: bool = True
    listen_host: str = "127.0.0.1"   # the patching listener, where StarlingX's sw-patch
    listen_port: int = 5487          # talks (127.0.0.1:5487); port 0 disables it
    release: str = "1.0"             # the running software release (sw_version)
    root: str = ""                   # default: <data_dir>/patching (store, repos, feed)
    trusted_dir: str = ""            # PEM certificates trusted for signature.v2;
                                     # default: <patching root>/trusted
    web_root: str = ""               # updates/rel-V and feed/rel-V served to hosts;
                                     # default: the [pxe] HTTP root
    repo_url: str = ""               # URL of that web root as deploy ramdisks see it
                                     # (conductor/drivers/deploy/patches.py); default: the
                                     # HTTP boot server's URL
    host_audit_interval: float = 30.0  # seconds between two HELLO_AGENTs (patching.query)
                                     # to the host agents of this conductor's nodes, as
                                     # StarlingX's controller sends every 30 s; 0: never


@dataclasses.dataclass(frozen=True)
class OrchestrationSettings:
    """``[orchestration]``: sw-manager strategies (conductor/orchestration/) and their
    REST API under /api/orchestration/ (api/starlingx/orchestration.py)."""

    enabled: bool = True
    audit_interval: float = 2.0      # seconds between two passes of the strategy runner
    stabilize_factor: float = 1.0    # system-stabilize waits its StarlingX time times
                                     # this (tests: 0); its timeout stays StarlingX's
    host_offline_after: float = 180.0  # seconds without a host-agent report: offline
    lease: float = 30.0              # seconds a conductor owns a running strategy
                                     # without touching it before another takes it over


@dataclasses.dataclass(frozen=True)
class IdentitySettings:
    """``[identity]``: the Keystone-style login clients with an openrc use
    (``POST /v3/auth/tokens``, api/identity/, conductor/identity.py). The users are the
    [api] htpasswd users, so with auth_strategy = none nobody can log in."""

    token_expiration: int = 3600     # seconds a token lives (Keystone's [token] expiration)
    region: str = "RegionOne"        # the region of every catalog endpoint
    projects: str = "admin"          # project names a token may be scoped to (comma list)
    patching_url: str = ""           # catalog URL of "patching"; default: the patching
                                     # listener if there is one, else the API's URL
    orchestration_url: str = ""      # catalog URL of "vim" (type nfv); default: the API's URL

    @property
    def project_names(self) -> list[str]:
        """``projects`` as a list."""
        return [p.strip() for p in self.projects.split(",") if p.strip()]


@dataclasses.dataclass(frozen=True)
class UpdatesSettings:
    """``[updates]``: the image-update server (conductor/updates/: the Omaha endpoint
    /v1/update/, the catalogue and the reboot leases under /updates/v1/)."""

    lease_ttl: float = 300.0         # seconds a reboot lease lives unless renewed
    cache_ttl: float = 1.0           # seconds an update check trusts its cached groups,
                                     # channels and images (changes made here: at once)


def _section(kind: type):
    return dataclasses.field(default_factory=kind)


@dataclasses.dataclass(frozen=True)
class Settings:
    """Every tunable of one appliance process: ``data_dir`` and one attribute per
    INI section."""

    data_dir: str = DEFAULT_DATA_DIR
    api: ApiSettings = _section(ApiSettings)
    database: DatabaseSettings = _section(DatabaseSettings)
    conductor: ConductorSettings = _section(ConductorSettings)
    secrets: SecretsSettings = _section(SecretsSettings)
    redfish: RedfishSettings = _section(RedfishSettings)
    ipmi: IpmiSettings = _section(IpmiSettings)
    dns: DnsSettings = _section(DnsSettings)
    agent: AgentSettings = _section(AgentSettings)
    deploy: DeploySettings = _section(DeploySettings)
    pxe: PxeSettings = _section(PxeSettings)
    dhcp: DhcpSettings = _section(DhcpSettings)
    patching: PatchingSettings = _section(PatchingSettings)
    identity: IdentitySettings = _section(IdentitySettings)
    orchestration: OrchestrationSettings = _section(OrchestrationSettings)
    updates: UpdatesSettings = _section(UpdatesSettings)

    @property
    def data_path(self) -> Path:
        return Path(os.path.expanduser(self.data_dir))

    def make_data_dir(self) -> Path:
        """Create the data dir 0700 (whatever the umask), or restrict a looser one
        with a warning; a ConfigError when that is not possible."""
        path = self.data_path
        try:
            existed = path.is_dir()
            path.mkdir(mode=DATA_DIR_MODE, parents=True, exist_ok=True)
            mode = stat.S_IMODE(path.stat().st_mode)
            if mode != DATA_DIR_MODE:
                if existed and mode & 0o077:
                    LOG.warning("Data dir %s was accessible by other users (mode %04o); "
                                "restricting it to its owner (%04o)", path, mode,
                                DATA_DIR_MODE)
                os.chmod(path, DATA_DIR_MODE)
        except OSError as exc:
            raise ConfigError(reason=f"cannot create or restrict the data dir {path} "
                                     f"(mode {DATA_DIR_MODE:04o}): {exc.strerror}") from None
        self._warn_outside_readers(path)
        return path

    def _warn_outside_readers(self, path: Path) -> None:
        # Everything else in the data dir is read by this process (the TFTP and HTTP
        # boot servers) or by the managed dnsmasq, which runs as our user. An existing
        # dnsmasq ([dhcp] mode = hostsdir) may run as another user ("dnsmasq" on Debian)
        # and cannot read host files under a 0700 directory.
        hostsdir = Path(os.path.expanduser(self.dhcp.hostsdir)) if self.dhcp.hostsdir \
            else path / "dhcp" / "hosts.d"
        if self.dhcp.mode == "hostsdir" and hostsdir.is_relative_to(path):
            LOG.warning("[dhcp] hostsdir %s is inside the data dir, which only its owner "
                        "may enter (%04o): a dnsmasq running as another user cannot read "
                        "it. Set [dhcp] hostsdir outside the data dir, or run dnsmasq as "
                        "this user.", hostsdir, DATA_DIR_MODE)

    @property
    def db_url(self) -> str:
        if self.database.connection:
            return self.database.connection
        return f"sqlite:///{self.data_path / 'metalcast.sqlite'}"

    @property
    def htpasswd_path(self) -> Path:
        return Path(self.api.htpasswd_file or self.data_path / "htpasswd")

    def check(self) -> None:
        """Refuse combinations that would be unsafe or unusable."""
        api = self.api
        if api.auth_strategy not in ("none", "http_basic"):
            raise ConfigError(reason=f"api.auth_strategy must be 'none' or 'http_basic', "
                                     f"not {api.auth_strategy!r}")
        if api.auth_strategy == "none" and not is_loopback(api.host):
            raise ConfigError(reason=(
                f"refusing to serve without authentication on {api.host}: set "
                "auth_strategy = http_basic in [api] (with an htpasswd file) or bind "
                "to 127.0.0.1"))
        if api.auth_strategy == "http_basic" and not self.htpasswd_path.is_file():
            raise ConfigError(reason=f"htpasswd file {self.htpasswd_path} not found; create "
                                     "it with `htpasswd -B -c FILE USER`")
        self._check_patching_listener()
        self._check_api_bounds()
        self._check_membership()
        if self.identity.token_expiration <= 0:
            raise ConfigError(reason="identity.token_expiration must be a positive number "
                                     "of seconds")

    def _check_api_bounds(self) -> None:
        """The [api] bounds (api/limits.py, api/http_server.py, api/throttle.py) must
        be positive: 0 would refuse every request, not lift the bound."""
        for key in ("max_request_body_size", "max_connections", "max_connections_per_client",
                    "header_timeout", "auth_max_concurrent_checks", "auth_checks_per_client",
                    "auth_failures_before_backoff", "auth_max_backoff"):
            if not getattr(self.api, key) > 0:
                raise ConfigError(reason=f"api.{key} must be greater than 0, not "
                                         f"{getattr(self.api, key)!r}")

    def _check_membership(self) -> None:
        """The conductor's name and the ring's bounds (conductor/cluster/)."""
        cond = self.conductor
        name = cond.host
        if not name or len(name) > 255 or not name.isprintable() or name != name.strip():
            raise ConfigError(reason=f"[DEFAULT] host (the conductor's name) must be 1-255 "
                                     f"printable characters without surrounding spaces, "
                                     f"not {name!r}")
        if len(cond.conductor_group) > 255 or not cond.conductor_group.isprintable():
            raise ConfigError(reason="[conductor] conductor_group must be at most 255 "
                                     "printable characters")
        if not 0 < cond.heartbeat_interval < cond.heartbeat_timeout:
            raise ConfigError(reason="[conductor] heartbeat_interval must be above 0 and "
                                     "below heartbeat_timeout, not "
                                     f"{cond.heartbeat_interval}/{cond.heartbeat_timeout}")
        if cond.role not in ROLES:
            raise ConfigError(reason=f"--role must be one of {', '.join(ROLES)}, not "
                                     f"{cond.role!r}")
        if cond.role != "all" and self.db_url.startswith("sqlite"):
            raise ConfigError(reason=(
                f"--role {cond.role} shares the database with other metalcast processes, "
                "and SQLite takes one writing process: set [database] connection to a "
                "PostgreSQL URL shared by every API and conductor process, or run one "
                "process with --role all"))
        if not 0 <= cond.hash_partition_exponent <= 16 or \
                cond.hash_distribution_replicas < 1 or cond.hash_ring_reset_interval <= 0:
            raise ConfigError(reason="[conductor] hash_partition_exponent must be 0-16, "
                                     "hash_distribution_replicas at least 1 and "
                                     "hash_ring_reset_interval above 0")

    def _check_patching_listener(self) -> None:
        """The patching listener follows the API's rules: without authentication it
        listens on loopback only, as StarlingX's local patch API (127.0.0.1:5487)."""
        patching = self.patching
        if not 0 <= patching.listen_port <= 65535:
            raise ConfigError(reason=f"patching.listen_port must be a TCP port (1-65535) or "
                                     f"0 to disable the listener, not {patching.listen_port}")
        if patching.enabled and patching.listen_port and \
                self.api.auth_strategy == "none" and not is_loopback(patching.listen_host):
            raise ConfigError(reason=(
                f"refusing to serve the patch API without authentication on "
                f"{patching.listen_host}: set auth_strategy = http_basic in [api] (with an "
                "htpasswd file) or set [patching] listen_host = 127.0.0.1"))


def is_loopback(host: str) -> bool:
    """True when ``host`` only listens on the loopback interface."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# -- conversion -----------------------------------------------------------------

_BOOLEANS = {"1": True, "true": True, "yes": True, "on": True,
             "0": False, "false": False, "no": False, "off": False}


def _boolean(raw: str) -> bool:
    try:
        return _BOOLEANS[raw.strip().lower()]
    except KeyError:
        raise ValueError(raw) from None


#: Declared field type -> (parser of INI/environment text, what an error says it expects).
PARSERS: dict[type, tuple[typing.Callable[[str], object], str]] = {
    bool: (_boolean, "a boolean (true/false, yes/no, on/off, 1/0)"),
    int: (int, "an integer"),
    float: (float, "a number"),
    str: (str, "a string"),
}


def _option_types() -> dict[tuple[str, str], type]:
    types: dict[tuple[str, str], type] = {("DEFAULT", "data_dir"): str}
    for section, kind in typing.get_type_hints(Settings).items():
        if section != "data_dir":
            for key, declared in typing.get_type_hints(kind).items():
                types[(section, key)] = declared
    return types


#: (section, key) -> declared type of every option; ``data_dir`` is in DEFAULT.
OPTION_TYPES = _option_types()
SECTIONS = frozenset(section for section, _ in OPTION_TYPES)


def _declared(section: str, key: str, where: str = "") -> type:
    """The declared type of ``[section] key``; a ConfigError naming them if unknown."""
    declared = OPTION_TYPES.get((section, key))
    if declared is None:
        what = "option" if section in SECTIONS else "section"
        raise ConfigError(reason=f"{where}unknown {what} [{section}] {key}")
    return declared


def convert(section: str, key: str, value, source: str = ""):
    """``value`` as the declared type of ``[section] key``: text is parsed, a value of
    the right type passes (an int for a float too); anything else is a ConfigError
    naming ``source`` (file, variable), the option and the expected type."""
    where = f"{source}: " if source else ""
    declared = _declared(section, key, where)
    parse, expected = PARSERS[declared]
    if isinstance(value, str):
        try:
            return parse(value)
        except ValueError:
            pass
    elif isinstance(value, declared) and not (declared is int and isinstance(value, bool)):
        return value
    elif declared is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    raise ConfigError(reason=f"{where}[{section}] {key}: expected {expected}, got {value!r}")


# -- sources --------------------------------------------------------------------

def _from_file(path: Path) -> dict:
    parser = configparser.ConfigParser()
    try:
        parser.read(path)
    except configparser.Error as exc:
        raise ConfigError(reason=f"{path}: {exc}") from None
    # The keys each section sets itself ([DEFAULT] is a plain section to this reader).
    literal = configparser.ConfigParser(default_section="\0", interpolation=None)
    literal.read(path)
    own = {section: set(literal[section]) for section in literal.sections()}
    values = {}
    sections = [("DEFAULT", parser.defaults())] + [(s, parser[s]) for s in parser.sections()]
    for section, items in sections:
        for key, raw in items.items():
            if section != "DEFAULT" and key not in own[section]:
                continue    # inherited from [DEFAULT] (configparser shows it everywhere)
            option = DEFAULT_ALIASES.get(key, (section, key)) if section == "DEFAULT" \
                else (section, key)
            values[option] = convert(*option, raw, str(path))
    return values


def env_var(section: str, key: str) -> str:
    """The environment variable of ``[section] key`` (``METALCAST_DATA_DIR`` for DEFAULT)."""
    name = key if section == "DEFAULT" else f"{section}_{key}"
    return "METALCAST_" + name.upper()


def _from_env(env) -> dict:
    values = {}
    names = list(ENV_ALIASES.items()) + [(env_var(*option), option) for option in OPTION_TYPES]
    for var, option in names:   # the full names come last and win over the shortcuts
        if var in env:
            values[option] = convert(*option, env[var], f"${var}")
    return values


def _from_options(options: typing.Mapping[str, object]) -> dict:
    """``{"api.port": 7002, "data_dir": ...}`` -> {(section, key): value}; None is unset
    (a flag not given), but its name must still be an option."""
    values = {}
    for name, value in options.items():
        section, _, key = name.rpartition(".")
        option = (section or "DEFAULT", key) if section or key not in DEFAULT_ALIASES \
            else DEFAULT_ALIASES[key]
        _declared(*option)
        if value is not None:
            values[option] = convert(*option, value)
    return values


def _build(values: dict, base: Settings) -> Settings:
    """``base`` with ``{(section, key): typed value}`` replaced."""
    sections: dict[str, dict] = {}
    for (section, key), value in values.items():
        sections.setdefault(section, {})[key] = value
    data_dir = sections.pop("DEFAULT", {}).get("data_dir", base.data_dir)
    return dataclasses.replace(
        base, data_dir=data_dir,
        **{name: dataclasses.replace(getattr(base, name), **keys)
           for name, keys in sections.items()})


def from_options(options: typing.Mapping[str, object], base: Settings | None = None) -> Settings:
    """``base`` (default: the built-in defaults) with ``options`` applied, no file and no
    environment read. ``options`` names each option ``section.key`` (``"api.port"``) or
    ``data_dir``, as :func:`load`'s overrides: ``{"conductor.workers": 4}``. Values are
    converted and checked like those of the file."""
    return _build(_from_options(options), base or Settings())


def load(config_file: str | None = None, overrides: dict | None = None,
         env=None) -> Settings:
    """Build the settings from defaults, file, environment and ``overrides``.

    ``overrides`` names options ``section.key`` (``{"api.port": 7002}``), or ``data_dir``.
    """
    env = os.environ if env is None else env
    from_flags = _from_options(overrides or {})
    from_env = _from_env(env)
    data_dir = (from_flags.get(("DEFAULT", "data_dir")) or from_env.get(("DEFAULT", "data_dir"))
                or DEFAULT_DATA_DIR)
    path = config_file or env.get("METALCAST_CONFIG")
    if path and not Path(path).is_file():
        raise ConfigError(reason=f"config file {path} does not exist")
    default_path = Path(os.path.expanduser(data_dir)) / "metalcast.conf"
    file_path = Path(path) if path else (default_path if default_path.is_file() else None)
    values = _from_file(file_path) if file_path else {}
    values.update(from_env)
    values.update(from_flags)
    return _build(values, Settings())
