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
    # Power-state sync (Ironic's [conductor] options; conductor/power_sync.py).
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
    ipmi_command_retry_timeout: float = 60.0  # retrying busy/timeout errors stops after this
    ipmi_power_state_timeout: float = 60.0    # wait for the BMC to report the new power state

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
