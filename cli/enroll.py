"""Bulk enrolment: nodes and their ports from YAML/JSON (``baremetal create`` format) or CSV.

Idempotent by node name and MAC: a node that exists (same name, or owning one of
the MACs) is not created again; its missing ports are added.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from cli.client import Client, ClientError
from cli.errors import InvalidInput

#: CSV BMC columns -> driver_info keys, per hardware type.
BMC_KEYS = {
    "redfish": ("redfish_address", "redfish_username", "redfish_password"),
    "ipmi": ("ipmi_address", "ipmi_username", "ipmi_password"),
}
CSV_REQUIRED = ("name", "driver")
#: The MAC forms the API accepts (conductor.service.validation): six hex pairs
#: separated by ':', '-' or nothing, any case.
_MAC_RE = re.compile(r"^([0-9a-f]{2})[:-]?([0-9a-f]{2})[:-]?([0-9a-f]{2})[:-]?"
                     r"([0-9a-f]{2})[:-]?([0-9a-f]{2})[:-]?([0-9a-f]{2})$")


def mac_address(value) -> str:
    """``value`` in lower-case colon form, as the API stores it; InvalidInput if not a MAC.

    Checked here too so that a bad row is reported with its line before any API call,
    and so that MACs written differently in the file compare equal.
    """
    match = _MAC_RE.match(value.strip().lower()) if isinstance(value, str) else None
    if not match:
        raise InvalidInput(f"Expected a MAC address but received {value!r}.")
    return ":".join(match.groups())


class _Loader(yaml.SafeLoader):
    """SafeLoader without YAML 1.1 base-60 integers.

    Plain YAML 1.1 reads an unquoted MAC such as 52:54:00:00:00:01 as the
    sexagesimal integer 3118451683201; enrolment files are full of MACs, so
    such scalars stay strings here.
    """


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers
            if tag not in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")
            or ":" not in regexp.pattern.replace("(?:", "")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)"
                             r"|[-+]?0x[0-9a-fA-F_]+)$"), list("-+0123456789"))
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?"
                             r"|\.[0-9_]+(?:[eE][-+][0-9]+)?|[-+]?\.(?:inf|Inf|INF)"
                             r"|\.(?:nan|NaN|NAN))$"), list("-+0123456789."))


@dataclasses.dataclass
class Entry:
    """One node to enrol, with its MACs, parsed from the file."""

    line: str
    body: dict
    macs: list[str]
    error: str | None = None


@dataclasses.dataclass
class Result:
    name: str
    uuid: str | None
    status: str          # created | exists | ports added | would create | error
    message: str = ""


def load(path: Path) -> list[Entry]:
    """Parse an enrolment file; its format is chosen by extension (.csv/.json/.yaml)."""
    text = path.read_text()
    if path.suffix.lower() == ".csv":
        return _from_csv(text)
    try:
        data = (json.loads(text) if path.suffix.lower() == ".json"
                else yaml.load(text, Loader=_Loader))
    except (ValueError, yaml.YAMLError) as exc:
        raise InvalidInput(f"{path}: not valid {path.suffix[1:].upper()}: {exc}") from None
    return _from_document(data, path)


def _from_document(data, path) -> list[Entry]:
    if not isinstance(data, dict) or not isinstance(data.get("nodes", []), list):
        raise InvalidInput(f"{path}: expected a mapping with a 'nodes' list "
                           "(the format `baremetal create` accepts)")
    unknown = set(data) - {"nodes", "chassis"}
    if unknown:
        raise InvalidInput(f"{path}: unknown top-level keys {sorted(unknown)}")
    nodes = list(data.get("nodes", []))
    for chassis in data.get("chassis", []) or []:
        nodes.extend(chassis.get("nodes", []))
    return [_entry_from_dict(f"node {i + 1}", node) for i, node in enumerate(nodes)]


def _entry_from_dict(line: str, node) -> Entry:
    if not isinstance(node, dict):
        return Entry(line, {}, [], "each node must be a mapping")
    body = {k: v for k, v in node.items() if k not in ("ports", "portgroups")}
    ports = node.get("ports", []) or []
    for group in node.get("portgroups", []) or []:
        ports.extend(group.get("ports", []) or [])
    return _checked(line, body, [p.get("address") if isinstance(p, dict) else p
                                 for p in ports])


def _checked(line: str, body: dict, raw_macs: list) -> Entry:
    try:
        macs = [mac_address(m) for m in raw_macs]
    except InvalidInput as exc:
        return Entry(line, body, [], str(exc))
    if not body.get("driver"):
        return Entry(line, body, macs, "missing 'driver'")
    return Entry(line, body, macs)


def _from_csv(text: str) -> list[Entry]:
    reader = csv.DictReader(line for line in text.splitlines() if line.strip())
    missing = [c for c in CSV_REQUIRED if c not in (reader.fieldnames or [])]
    if missing:
        raise InvalidInput(
            f"CSV header must include {', '.join(CSV_REQUIRED)} (and optionally "
            "bmc_address, bmc_username, bmc_password, bmc_port, macs, resource_class); "
            f"missing: {', '.join(missing)}")
    entries = []
    for number, row in enumerate(reader, start=2):
        body = {"name": row["name"].strip() or None, "driver": row["driver"].strip()}
        if row.get("resource_class"):
            body["resource_class"] = row["resource_class"].strip()
        info = {}
        keys = BMC_KEYS.get(body["driver"] or "", BMC_KEYS["ipmi"])
        for column, key in zip(("bmc_address", "bmc_username", "bmc_password"), keys):
            if row.get(column):
                info[key] = row[column].strip()
        if row.get("bmc_port"):
            info[keys[0].replace("address", "port")] = row["bmc_port"].strip()
        if info:
            body["driver_info"] = info
        macs = (row.get("macs") or "").replace(";", " ").replace(",", " ").split()
        entries.append(_checked(f"line {number}", body, macs))
    return entries


class Enroller:
    """Applies entries against the API with a few parallel connections."""

    def __init__(self, client_factory, workers: int = 8):
        self._factory = client_factory
        self._local = threading.local()
        self.workers = workers

    def _client(self) -> Client:
        if not hasattr(self._local, "client"):
            self._local.client = self._factory()
        return self._local.client

    def run(self, entries: list[Entry], dry_run: bool = False, progress=None) -> list[Result]:
        client = self._client()
        by_name = {n["name"]: n["uuid"] for n in client.list_nodes(fields="uuid,name")
                   if n.get("name")}
        by_mac = {p["address"]: p["node_uuid"]
                  for p in client.list_ports(fields="uuid,address,node_uuid")}

        _mark_duplicates(entries)

        def one(entry: Entry) -> Result:
            result = self._one(entry, by_name, by_mac, dry_run)
            if progress:
                progress.advance(note=result.status)
            return result

        with ThreadPoolExecutor(self.workers) as pool:
            return list(pool.map(one, entries))

    def _one(self, entry: Entry, by_name: dict, by_mac: dict, dry_run: bool) -> Result:
        name = entry.body.get("name") or entry.line
        if entry.error:
            return Result(name, None, "error", f"{entry.line}: {entry.error}")
        owners = {by_mac[m] for m in entry.macs if m in by_mac}
        uuid = by_name.get(entry.body.get("name"))
        named_other = entry.body.get("name") and uuid is None and owners and any(
            owner in by_name.values() for owner in owners)
        if len(owners) > 1 or (uuid and owners - {uuid}) or named_other:
            return Result(name, uuid, "error", f"{entry.line}: MACs already belong to other "
                                               f"node(s) {', '.join(sorted(owners))}")
        uuid = uuid or (owners.pop() if owners else None)
        new_macs = [m for m in entry.macs if m not in by_mac]
        if dry_run:
            status = "would create" if uuid is None else (
                "would add ports" if new_macs else "exists")
            return Result(name, uuid, status)
        created = uuid is None
        try:
            if created:
                uuid = self._client().create_node(entry.body)["uuid"]
            for mac in new_macs:
                self._client().create_port({"address": mac, "node_uuid": uuid})
        except ClientError as exc:
            if created and uuid:  # do not leave a node without the ports it was listed with
                self._client().delete_node(uuid)
                uuid = None
            return Result(name, uuid, "error", f"{entry.line}: {exc}")
        status = "created" if created else ("ports added" if new_macs else "exists")
        return Result(name, uuid, status)


def _mark_duplicates(entries: list[Entry]) -> None:
    """A MAC or name listed twice in one file is an error on the later entry."""
    seen_macs: dict[str, str] = {}
    seen_names: dict[str, str] = {}
    for entry in entries:
        if entry.error:
            continue
        name = entry.body.get("name")
        if name and name in seen_names:
            entry.error = f"name {name} is also listed at {seen_names[name]}"
            continue
        dup = [m for m in entry.macs if m in seen_macs]
        if dup:
            entry.error = f"MAC {dup[0]} is also listed at {seen_macs[dup[0]]}"
            continue
        if name:
            seen_names.setdefault(name, entry.line)
        seen_macs.update({m: entry.line for m in entry.macs})
