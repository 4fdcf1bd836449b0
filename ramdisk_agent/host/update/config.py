"""update.conf: the host update engine's settings, Flatcar style.

A file of ``KEY=value`` lines (``#`` comments, optional quotes), as Flatcar's
``/etc/flatcar/update.conf``; later files override earlier ones (defaults, then
``/etc/metalcast/update.conf``, then ``--set KEY=value``). Flatcar's keys keep their
meaning: ``SERVER`` (``disabled`` stops checks, the boot is still marked good),
``GROUP``, ``REBOOT_STRATEGY`` (``reboot``/``lease``/``off``; locksmith's
``etcd-lock`` is read as ``lease``), ``REBOOT_WINDOW_START``/``REBOOT_WINDOW_LENGTH``.
The rest are metalcast's. An unknown key is refused (a typo must not silently leave
a default in force).
"""
from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Callable, Iterable, Mapping

from ramdisk_agent.host.update.schedule import Schedule
from ramdisk_agent.host.update.window import Window, WindowError, parse_duration

#: metalcast's Omaha application id; the update server defines the same constant.
METALCAST_APPID = "{7d6a52c5-3e0b-4a5c-9a8e-6d6574616c63}"
DEFAULT_PATH = "/etc/metalcast/update.conf"
STRATEGIES = ("reboot", "lease", "off")
_STRATEGY_ALIASES = {"etcd-lock": "lease", "best-effort": "reboot"}


class ConfigError(ValueError):
    """A setting that cannot be used; the message names the key and what to write."""


@dataclasses.dataclass(frozen=True)
class UpdateConfig:
    server: str | None = None                 #: Omaha URL; None = updates disabled
    group: str = "stable"
    appid: str = METALCAST_APPID
    reboot_strategy: str = "reboot"
    window: Window | None = None
    machine_id_file: str = "/etc/machine-id"
    update_key_file: str = "/etc/metalcast/update-key.pem"
    #: the disk holding the slots (block device or image file); None: from the
    #: active slot's PARTUUID on the kernel command line
    disk: str | None = None
    slot_labels: tuple[str, str] = ("USR-A", "USR-B")
    active_slot: str | None = None            #: override: a label or partition number
    cmdline_file: str = "/proc/cmdline"
    os_release_file: str = "/etc/os-release"
    boot_id_file: str = "/proc/sys/kernel/random/boot_id"
    version: str | None = None                #: override of os-release's VERSION
    state_dir: str = "/var/lib/metalcast/update"
    reboot_required_file: str = "/run/reboot-required"
    reboot_command: tuple[str, ...] = ("systemctl", "reboot")
    health_commands: tuple[str, ...] = ()
    health_units: tuple[str, ...] = ()
    health_window: float = 45.0
    #: also require that the appliance answered (an Omaha ping) before marking good
    health_needs_appliance: bool = True
    #: ask for deltas from the running version (``delta_okay``); false: full images only
    delta_okay: bool = True
    #: name the passive slot's version in checks, so the appliance may offer a delta
    #: from it, applied in place (slotdelta.apply_in_place: the whole result checked
    #: in one read of the slot, then only the changed ranges written and read back).
    #: Off by default: on the bench machine (virtio disk, 1 GiB slot, shared 2 cores)
    #: it measures about as fast as the delta from the running version, whose
    #: whole-slot write overlaps its read (best 1.63 vs 1.77 s, medians 2.01 vs 1.85),
    #: and neither within 1.2x of its floor; it saves the writes where writes are
    #: dear (flash wear, slow media)
    delta_in_place: bool = False
    lease_url: str | None = None              #: default: derived from SERVER
    lease_group: str = "default"
    #: the host agent's token (``metalcast-agent host``'s default --token-file)
    token_file: str = "/var/lib/metalcast-agent/host-agent-token.json"
    node_uuid: str | None = None
    ca_file: str | None = None
    insecure: bool = False
    wall_delay: float = 300.0                 #: locksmith: 5 min warning to users
    schedule: Schedule = Schedule()

    @property
    def enabled(self) -> bool:
        return self.server is not None

    @property
    def appliance(self) -> str | None:
        """The appliance's base URL: SERVER without Flatcar's ``/v1/update/`` path."""
        if self.server is None:
            return None
        base = self.server.rstrip("/")
        return base[:-len("/v1/update")] if base.endswith("/v1/update") else base

    def leases_endpoint(self) -> str | None:
        if self.lease_url:
            return self.lease_url
        return None if self.appliance is None else self.appliance + "/updates/v1/leases"


def parse_lines(text: str, source: str) -> dict[str, str]:
    """``KEY=value`` lines into a dict; ConfigError naming the file and line."""
    values = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip().replace("_", "").isalnum():
            raise ConfigError(f"{source}:{number}: expected KEY=value, got {line[:60]!r}")
        try:
            parts = shlex.split(value, comments=True)
        except ValueError as exc:
            raise ConfigError(f"{source}:{number}: {exc}") from None
        values[key.strip().upper()] = " ".join(parts)
    return values


def _flag(value: str) -> bool:
    lowered = value.lower()
    if lowered not in ("true", "false", "yes", "no", "1", "0"):
        raise ValueError(f"{value!r} is not true or false")
    return lowered in ("true", "yes", "1")


def _words(value: str) -> tuple[str, ...]:
    return tuple(shlex.split(value))


def _list(value: str) -> tuple[str, ...]:
    """A ';'-separated list (commands contain spaces and commas)."""
    return tuple(item.strip() for item in value.split(";") if item.strip())


def _labels(value: str) -> tuple[str, str]:
    items = tuple(item.strip() for item in value.split(",") if item.strip())
    if len(items) != 2:
        raise ValueError(f"{value!r}: give two slots, e.g. USR-A,USR-B or 3,4")
    return items[0], items[1]


def _server(value: str) -> str | None:
    if value.lower() == "disabled" or not value:
        return None
    if not value.startswith(("http://", "https://")):
        raise ValueError(f"{value!r} is not an http(s) URL (or 'disabled')")
    return value


def _strategy(value: str) -> str:
    value = _STRATEGY_ALIASES.get(value.lower(), value.lower())
    if value not in STRATEGIES:
        raise ValueError(f"{value!r}: one of {', '.join(STRATEGIES)}")
    return value


def _positive(value: str) -> float:
    seconds = parse_duration(value) if not value.replace(".", "").isdigit() else float(value)
    if seconds < 0:
        raise ValueError("must not be negative")
    return seconds


def _optional(value: str) -> str | None:
    return value or None


#: KEY -> (field, converter); schedule fields are handled by _SCHEDULE.
_FIELDS: dict[str, tuple[str, Callable[[str], object]]] = {
    "SERVER": ("server", _server), "GROUP": ("group", str), "APPID": ("appid", str),
    "REBOOT_STRATEGY": ("reboot_strategy", _strategy),
    "MACHINE_ID_FILE": ("machine_id_file", str), "UPDATE_KEY": ("update_key_file", str),
    "DISK": ("disk", _optional), "SLOTS": ("slot_labels", _labels),
    "ACTIVE_SLOT": ("active_slot", _optional), "CMDLINE_FILE": ("cmdline_file", str),
    "OS_RELEASE_FILE": ("os_release_file", str), "BOOT_ID_FILE": ("boot_id_file", str),
    "VERSION": ("version", _optional),
    "STATE_DIR": ("state_dir", str), "REBOOT_REQUIRED_FILE": ("reboot_required_file", str),
    "REBOOT_COMMAND": ("reboot_command", _words),
    "HEALTH_COMMANDS": ("health_commands", _list), "HEALTH_UNITS": ("health_units", _list),
    "HEALTH_WINDOW": ("health_window", _positive),
    "HEALTH_NEEDS_APPLIANCE": ("health_needs_appliance", _flag),
    "DELTA_OKAY": ("delta_okay", _flag), "DELTA_IN_PLACE": ("delta_in_place", _flag),
    "LEASE_URL": ("lease_url", _optional),
    "LEASE_GROUP": ("lease_group", str),
    "TOKEN_FILE": ("token_file", str), "NODE_UUID": ("node_uuid", _optional),
    "CA_FILE": ("ca_file", _optional), "INSECURE": ("insecure", _flag),
    "WALL_DELAY": ("wall_delay", _positive),
}
_SCHEDULE = {"FIRST_CHECK_DELAY": "first_delay", "CHECK_INTERVAL": "interval",
             "CHECK_FUZZ": "fuzz", "BACKOFF_CAP": "backoff_cap"}
_WINDOW = ("REBOOT_WINDOW_START", "REBOOT_WINDOW_LENGTH")


def build(values: Mapping[str, str]) -> UpdateConfig:
    """An UpdateConfig from merged KEY=value settings."""
    unknown = set(values) - set(_FIELDS) - set(_SCHEDULE) - set(_WINDOW)
    if unknown:
        raise ConfigError(f"unknown update.conf key(s) {', '.join(sorted(unknown))}; known: "
                          f"{', '.join(sorted([*_FIELDS, *_SCHEDULE, *_WINDOW]))}")
    fields: dict[str, object] = {}
    for key, value in values.items():
        try:
            if key in _FIELDS:
                name, convert = _FIELDS[key]
                fields[name] = convert(value)
            elif key in _SCHEDULE:
                fields.setdefault("_schedule", {})[_SCHEDULE[key]] = _positive(value)  # type: ignore[index]
        except (ValueError, WindowError) as exc:
            raise ConfigError(f"{key}: {exc}") from None
    schedule = fields.pop("_schedule", {})
    fields["schedule"] = Schedule(**schedule)    # type: ignore[arg-type]
    fields["window"] = _window(values)
    return UpdateConfig(**fields)   # type: ignore[arg-type]


def _window(values: Mapping[str, str]) -> Window | None:
    start, length = (values.get(key, "") for key in _WINDOW)
    if not start and not length:
        return None
    if not start or not length:
        raise ConfigError("REBOOT_WINDOW_START and REBOOT_WINDOW_LENGTH go together: "
                          "set both (e.g. 'Thu 04:00' and '1h30m') or neither")
    try:
        return Window.parse(start, length)
    except WindowError as exc:
        raise ConfigError(str(exc)) from None


def load(paths: Iterable[str], overrides: Mapping[str, str] | None = None,
         required: bool = False) -> UpdateConfig:
    """Files in order (a missing one is skipped unless ``required``), then overrides."""
    values: dict[str, str] = {}
    for path in paths:
        try:
            with open(path, encoding="utf-8") as handle:
                values.update(parse_lines(handle.read(), path))
        except FileNotFoundError:
            if required:
                raise ConfigError(f"{path} does not exist: create it or pass --config") \
                    from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path} cannot be read: {exc}") from None
    values.update({key.upper(): value for key, value in (overrides or {}).items()})
    return build(values)
