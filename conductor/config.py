"""One settings object, read from a config file, the environment and flags.

Precedence (lowest first): built-in defaults, the INI file (``--config-file``,
``$METALCAST_CONFIG`` or ``<data-dir>/metalcast.conf``), environment variables
``METALCAST_<SECTION>_<KEY>`` (plus the short ``METALCAST_HOST``,
``METALCAST_PORT``, ``METALCAST_DATA_DIR``), then explicit overrides (CLI flags).
"""
from __future__ import annotations

import configparser
import dataclasses
import ipaddress
import os
import socket
from pathlib import Path

from conductor.errors import ConfigError

DEFAULT_DATA_DIR = "~/.local/share/metalcast"

#: Environment shortcuts users type most.
ENV_ALIASES = {"METALCAST_HOST": ("api", "host"), "METALCAST_PORT": ("api", "port"),
               "METALCAST_DATA_DIR": ("DEFAULT", "data_dir")}


@dataclasses.dataclass
class Settings:
    """Every tunable of one appliance process. Field names are ``section_key``."""

    data_dir: str = DEFAULT_DATA_DIR
    api_host: str = "127.0.0.1"
    api_port: int = 6385
    api_auth_strategy: str = "none"          # none | http_basic
    api_htpasswd_file: str = ""              # default: <data_dir>/htpasswd
    api_max_limit: int = 1000
    api_public_endpoint: str = ""
    database_connection: str = ""            # default: sqlite in data_dir
    database_auto_upgrade: bool = True
    conductor_host: str = dataclasses.field(default_factory=socket.gethostname)
    conductor_workers: int = 16
    conductor_max_queued: int = 256
    conductor_max_concurrent_deploy: int = 250
    conductor_max_concurrent_clean: int = 50
    conductor_deploy_callback_timeout: int = 1800
    conductor_clean_callback_timeout: int = 1800
    conductor_inspect_wait_timeout: int = 1800
    conductor_rescue_callback_timeout: int = 1800
    conductor_service_callback_timeout: int = 1800
    conductor_check_provision_state_interval: int = 60
    conductor_heartbeat_interval: int = 10
    conductor_automated_clean: bool = True
    conductor_enabled_hardware_types: str = "fake-hardware,ipmi,redfish"
    conductor_allow_deleting_available_nodes: bool = True
    # Power-state sync (Ironic's [conductor] options; conductor/engine/power_sync.py).
    conductor_sync_power_state_interval: float = 60    # seconds between sweeps; 0 disables
    conductor_sync_power_state_workers: int = 8        # BMCs queried in parallel per sweep
    conductor_force_power_state_during_sync: bool = False  # push the recorded state instead
    conductor_power_state_sync_max_retries: int = 3    # failed sweeps before maintenance
    secrets_key_file: str = ""               # default: <data_dir>/keys/secrets.key
    # Redfish (sushy) driver: Ironic's [redfish] options, with bounds that keep a dead
    # BMC from holding a worker for minutes.
    redfish_power_state_change_timeout: int = 60   # seconds to wait for On/Off to show
    redfish_power_poll_interval: float = 0.5         # seconds between power state reads
    redfish_connect_timeout: float = 10.0            # TCP connect timeout per request
    redfish_read_timeout: float = 60.0               # response timeout per request
    redfish_connection_attempts: int = 3             # tries on connection errors / GET 5xx
    redfish_connection_retry_interval: float = 2.0   # seconds between those tries
    redfish_auth_type: str = "auto"                  # default for driver_info.redfish_auth_type
    redfish_connection_cache_size: int = 1000        # cached sushy sessions per process
    # IPMI (pyghmi) driver: Ironic's [ipmi] options. Commands to one BMC are serialised
    # and spaced; Ironic's 5 s spacing protects BMCs from a new ipmitool session per
    # command, while pyghmi keeps one session open, so 1 s is enough here.
    ipmi_min_command_interval: float = 1.0    # seconds between two commands to one BMC
    ipmi_command_timeout: float = 20.0        # hard bound on one IPMI exchange (incl. login)
    ipmi_login_timeout: float = 10.0          # bound on an RMCP+ login (capped by the above)
    ipmi_max_concurrent_logins: int = 8       # RMCP+ logins in flight at once; others queue
    ipmi_command_retry_timeout: float = 60.0  # retrying busy/timeout errors stops after this
    ipmi_power_state_timeout: float = 60.0    # wait for the BMC to report the new power state
    # DNS registration (conductor/dns/rfc2136.py, conductor/dns/registration.py): RFC 2136
    # UPDATE of A/AAAA + PTR when a node becomes active, removed on undeploy.
    dns_server: str = ""                      # IP or host name of the primary; empty disables
    dns_port: int = 53
    dns_zone: str = ""                        # forward zone; host = <node name label>.<zone>
    dns_reverse_zone_v4: str = ""             # empty: the server's zone cut (SOA query) decides
    dns_reverse_zone_v6: str = ""             # likewise, under ip6.arpa
    dns_tsig_key_name: str = ""               # empty (with no secret): unsigned updates
    dns_tsig_secret: str = dataclasses.field(default="", repr=False)  # base64; never logged
    dns_tsig_algorithm: str = "hmac-sha256"
    dns_ttl: int = 300
    dns_timeout: float = 5.0                  # seconds per DNS exchange
    dns_protocol: str = "udp"                 # udp (TCP on truncation) | tcp
    dns_retry_interval: float = 60.0          # seconds between retries of failed updates
    # Agent: the `direct` deploy interface and the ramdisk endpoints (Ironic's [agent]
    # and [api] ramdisk options; conductor/service/ramdisk.py, agent_client.py, deploy.py).
    agent_require_tls: bool = True            # refuse plain-http agent callback URLs
    agent_heartbeat_timeout: int = 300        # told to the agent at lookup; it beats every 30-60 %
    agent_command_timeout: float = 60.0       # one HTTP request to the agent's command API
    agent_max_command_attempts: int = 3       # tries on connection errors (not on HTTP errors)
    agent_command_wait_interval: float = 2.0  # polling of synchronous waits (install_bootloader)
    agent_command_wait_attempts: int = 100    # ... up to this many polls
    agent_post_deploy_power_off_wait: float = 30.0  # wait for the agent's own power-off, then force it
    agent_image_head_timeout: float = 10.0    # HEAD on an http(s) image_source before deploying
    # Automated-clean priorities of the agent's steps (Ironic's [deploy] options); 0 skips.
    # A full erase_devices shreds whole disks (hours), so it runs only when asked.
    deploy_erase_devices_priority: int = 0
    deploy_erase_devices_metadata_priority: int = 99
    # Network boot (conductor/netboot/, drivers/pxe.py): TFTP + HTTP boot servers and the
    # per-MAC iPXE/PXELINUX/GRUB configs of the pxe and ipxe boot interfaces.
    pxe_enabled: bool = True                  # run the TFTP and HTTP boot servers here
    pxe_tftp_root: str = ""                   # default: <data_dir>/tftpboot
    pxe_http_root: str = ""                   # default: <data_dir>/httpboot
    pxe_tftp_host: str = ""                   # default: [api] host
    pxe_tftp_port: int = 69                   # 0: any free port (tests)
    pxe_http_host: str = ""                   # default: [api] host
    pxe_http_port: int = 8080                 # 0: any free port (tests)
    pxe_http_url: str = ""                    # URL machines use for the HTTP root; default host:port
    pxe_api_url: str = ""                     # ipa-api-url for the agent; default: the API's URL
    pxe_deploy_kernel: str = ""               # default driver_info.deploy_kernel: URL or HTTP-root name
    pxe_deploy_ramdisk: str = ""              # likewise for deploy_ramdisk
    pxe_kernel_append_params: str = "nofb vga=normal"  # extra kernel parameters (never secrets)
    pxe_default_boot_mode: str = "bios"       # bios (PXELINUX) | uefi (GRUB) when a node says nothing
    # DHCP (conductor/netboot/dhcp.py): per-MAC dnsmasq host entries that pick the boot
    # loader; `managed` runs our own dnsmasq on one interface, `hostsdir` only writes the
    # entries into the dhcp-hostsdir of a dnsmasq someone else runs.
    dhcp_mode: str = "none"                   # none | managed | hostsdir
    dhcp_interface: str = ""                  # managed: the interface dnsmasq serves
    dhcp_range: str = ""                      # managed: start,end[,netmask][,lease time]
    dhcp_ipv6_ra: str = "auto"                # auto (RA when the interface has IPv6) | on | off
    dhcp_hostsdir: str = ""                   # default: <data_dir>/dhcp/hosts.d
    dhcp_leasefile: str = ""                  # default: <data_dir>/dhcp/dnsmasq.leases
    dhcp_unknown_hosts: str = "ignore"        # ignore | inspect (unknown MACs get the iPXE chain)
    dhcp_boot_server: str = ""                # next-server (TFTP) IP; default: dnsmasq's own address
    dhcp_ipxe_url: str = ""                   # sent to iPXE; default: <pxe http_url>/boot.ipxe
    dhcp_bios_loader: str = "undionly.kpxe"   # ipxe interface, legacy BIOS PXE ROMs
    dhcp_uefi_loader: str = "ipxe.efi"        # ipxe interface, UEFI x86-64 (client arch 7/9)
    dhcp_pxe_bios_loader: str = "pxelinux.0"  # pxe interface, legacy BIOS
    dhcp_pxe_uefi_loader: str = "grubx64.efi"  # pxe interface, UEFI x86-64
    dhcp_log_dhcp: bool = False               # managed: dnsmasq logs every DHCP exchange
    dhcp_ping: bool = True                    # managed: ping a new address before offering it
                                              # (~3 s per new lease); false = dnsmasq no-ping
    # Patching (conductor/patching/): StarlingX sw-patch semantics, /patching/v1 API.
    patching_enabled: bool = True
    patching_release: str = "1.0"             # the running software release (sw_version)
    patching_root: str = ""                   # default: <data_dir>/patching (store, repos, feed)
    patching_trusted_dir: str = ""            # PEM certificates trusted for signature.v2;
                                              # default: <patching root>/trusted
    patching_web_root: str = ""               # updates/rel-V and feed/rel-V served to hosts;
                                              # default: the [pxe] HTTP root
    patching_repo_url: str = ""               # URL of that web root as deploy ramdisks see it
                                              # (conductor/drivers/deploy/patches.py); default: the
                                              # HTTP boot server's URL

    @property
    def data_path(self) -> Path:
        return Path(os.path.expanduser(self.data_dir))

    @property
    def db_url(self) -> str:
        if self.database_connection:
            return self.database_connection
        return f"sqlite:///{self.data_path / 'metalcast.sqlite'}"

    @property
    def htpasswd_path(self) -> Path:
        return Path(self.api_htpasswd_file or self.data_path / "htpasswd")

    @property
    def hardware_types(self) -> list[str]:
        return [h.strip() for h in self.conductor_enabled_hardware_types.split(",") if h.strip()]

    def check(self) -> None:
        """Refuse combinations that would be unsafe or unusable."""
        if self.api_auth_strategy not in ("none", "http_basic"):
            raise ConfigError(reason=f"api.auth_strategy must be 'none' or 'http_basic', "
                                     f"not {self.api_auth_strategy!r}")
        if self.api_auth_strategy == "none" and not is_loopback(self.api_host):
            raise ConfigError(reason=(
                f"refusing to serve without authentication on {self.api_host}: set "
                "auth_strategy = http_basic in [api] (with an htpasswd file) or bind "
                "to 127.0.0.1"))
        if self.api_auth_strategy == "http_basic" and not self.htpasswd_path.is_file():
            raise ConfigError(reason=f"htpasswd file {self.htpasswd_path} not found; create "
                                     "it with `htpasswd -B -c FILE USER`")


def is_loopback(host: str) -> bool:
    """True when ``host`` only listens on the loopback interface."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _fields() -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(Settings)}


def _coerce(name: str, raw: str):
    field = _fields()[name]
    kind = field.type
    if kind == "bool":
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(reason=f"{name}: expected a boolean, got {raw!r}")
    if kind == "int":
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(reason=f"{name}: expected an integer, got {raw!r}") from None
    if kind == "float":
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(reason=f"{name}: expected a number, got {raw!r}") from None
    return raw


def _key(section: str, key: str) -> str:
    return key if section == "DEFAULT" else f"{section}_{key}"


def _from_file(path: Path) -> dict:
    parser = configparser.ConfigParser()
    try:
        parser.read(path)
    except configparser.Error as exc:
        raise ConfigError(reason=f"{path}: {exc}") from None
    values = {}
    sections = [("DEFAULT", parser.defaults())] + [(s, parser[s]) for s in parser.sections()]
    for section, items in sections:
        for key, raw in items.items():
            if section != "DEFAULT" and key in parser.defaults():
                continue
            name = _key(section, key)
            if name not in _fields():
                raise ConfigError(reason=f"{path}: unknown option [{section}] {key}")
            values[name] = _coerce(name, raw)
    return values


def _from_env(env) -> dict:
    values = {}
    for var, (section, key) in ENV_ALIASES.items():
        if var in env:
            values[_key(section, key)] = _coerce(_key(section, key), env[var])
    for name in _fields():
        var = "METALCAST_" + name.upper()
        if var in env:
            values[name] = _coerce(name, env[var])
    return values


def load(config_file: str | None = None, overrides: dict | None = None,
         env=None) -> Settings:
    """Build the settings from defaults, file, environment and ``overrides``."""
    env = os.environ if env is None else env
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    from_env = _from_env(env)
    data_dir = overrides.get("data_dir") or from_env.get("data_dir") or DEFAULT_DATA_DIR
    path = config_file or env.get("METALCAST_CONFIG")
    if path and not Path(path).is_file():
        raise ConfigError(reason=f"config file {path} does not exist")
    default_path = Path(os.path.expanduser(data_dir)) / "metalcast.conf"
    file_path = Path(path) if path else (default_path if default_path.is_file() else None)
    values = _from_file(file_path) if file_path else {}
    values.update(from_env)
    values.update(overrides)
    return Settings(**values)
