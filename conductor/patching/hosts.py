"""Host reports and the patch-state algorithm (specs/starlingx-patching.md §2.2-2.3).

StarlingX recomputes every patch state from every host after each report. Here
each host's *implications* (which patches it makes Partial-Apply or
Partial-Remove) are computed once per report from an index package -> patches,
and per-patch counters are adjusted, so a report costs O(that host's packages)
whatever the fleet size; the result is the same as §2.2's full pass, which
``recompute_all`` still does when repo states change (apply, remove, commit).
"""
from __future__ import annotations

import dataclasses
import time

from conductor.patching.store import RepoState
from ramdisk_agent.wire import rpmver

PARTIAL_APPLY = "Partial-Apply"
PARTIAL_REMOVE = "Partial-Remove"
NOT_APPLICABLE = "n/a"
#: Host (agent) states of §2.3.
HOST_STATES = ("idle", "installing", "install-failed", "install-rejected")


@dataclasses.dataclass
class HostReport:
    """What a host agent reports (the detailed query of StarlingX's agent)."""

    hostname: str
    ip: str = ""
    nodetype: str = "controller"
    subfunctions: list[str] = dataclasses.field(default_factory=list)
    sw_version: str = ""
    out_of_date: bool = False
    installed: dict[str, str] = dataclasses.field(default_factory=dict)  # name -> "[e:]v-r@arch"
    to_remove: list[str] = dataclasses.field(default_factory=list)
    missing_pkgs: list[str] = dataclasses.field(default_factory=list)
    duplicated_pkgs: dict = dataclasses.field(default_factory=dict)
    state: str = "idle"
    node_is_patched: bool = False     #: the agent's reboot-required flag
    patch_failed: bool = False

    @classmethod
    def from_dict(cls, data: dict) -> HostReport:
        fields = {f.name for f in dataclasses.fields(cls)}
        report = cls(**{k: v for k, v in data.items() if k in fields})
        if report.state not in HOST_STATES:
            raise ValueError(f"unknown host state {report.state!r}")
        return report


@dataclasses.dataclass
class PatchInfo:
    """What the algorithm needs to know of a patch."""

    id: str
    sw_version: str
    repostate: RepoState
    reboot_required: str
    #: package name -> "version-release" of this patch's RPM (epoch stripped, §2.2).
    packages: dict[str, str]
    personalities: dict[str, list[str]]


class HostTable:
    """Known hosts, their implications, and the patch states derived from them."""

    def __init__(self):
        self.hosts: dict[str, HostReport] = {}
        #: hostname -> wall-clock time of its last report (time.time(): it is stored).
        self.last_report: dict[str, float] = {}
        self.patches: dict[str, PatchInfo] = {}
        self._by_package: dict[tuple[str, str], list[PatchInfo]] = {}
        self._implications: dict[str, dict[str, str]] = {}
        self._counts: dict[str, dict[str, int]] = {}
        #: patch id -> hosts that have not reported since the last apply/remove of it.
        self.interim: dict[str, set[str]] = {}
        #: hosts whose last report says patch_failed (kept here: alarms read it per report).
        self.failed: set[str] = set()

    # -- patches --------------------------------------------------------------------
    def set_patches(self, patches: list[PatchInfo]) -> None:
        """Replace the patch list (after any repo state change) and recompute."""
        self.patches = {p.id: p for p in patches}
        self._by_package = {}
        for patch in patches:
            for name in patch.packages:
                self._by_package.setdefault((name, patch.sw_version), []).append(patch)
        self.interim = {pid: hosts for pid, hosts in self.interim.items()
                        if pid in self.patches}
        self.recompute_all()

    def mark_interim(self, patch_id: str) -> None:
        self.interim[patch_id] = set(self.hosts)

    def interim_of(self, hostname: str) -> list[str]:
        """The patches ``hostname`` has not reported on since they were applied/removed."""
        return sorted(pid for pid, names in self.interim.items() if hostname in names)

    def set_interim(self, hostname: str, patch_ids: list[str]) -> None:
        """Make ``patch_ids`` (the known ones) the interim patches of ``hostname``."""
        for names in self.interim.values():
            names.discard(hostname)
        for pid in patch_ids:
            if pid in self.patches:
                self.interim.setdefault(pid, set()).add(hostname)

    # -- hosts ----------------------------------------------------------------------
    def report(self, report: HostReport, seen_at: float | None = None) -> None:
        """Take one host's report (received at ``seen_at``, default now): O(its
        packages), not O(fleet)."""
        name = report.hostname
        self._forget(name)
        self.hosts[name] = report
        self.last_report[name] = time.time() if seen_at is None else seen_at
        for hosts in self.interim.values():
            hosts.discard(name)
        if report.patch_failed:
            self.failed.add(name)
        else:
            self.failed.discard(name)
        implications = self._implications_of(report)
        self._implications[name] = implications
        for patch_id, state in implications.items():
            counts = self._counts.setdefault(patch_id, {})
            counts[state] = counts.get(state, 0) + 1

    def drop(self, hostname: str) -> bool:
        if hostname not in self.hosts:
            return False
        self._forget(hostname)
        del self.hosts[hostname]
        self.failed.discard(hostname)
        self.last_report.pop(hostname, None)
        for hosts in self.interim.values():
            hosts.discard(hostname)
        return True

    def _forget(self, name: str) -> None:
        for patch_id, state in self._implications.pop(name, {}).items():
            self._counts[patch_id][state] -= 1

    def recompute_all(self) -> None:
        self._implications, self._counts = {}, {}
        for name, report in self.hosts.items():
            implications = self._implications_of(report)
            self._implications[name] = implications
            for patch_id, state in implications.items():
                counts = self._counts.setdefault(patch_id, {})
                counts[state] = counts.get(state, 0) + 1

    def _implications_of(self, host: HostReport) -> dict[str, str]:
        """§2.2 steps 3-5 for one host: patch id -> the partial state it implies."""
        found: dict[str, str] = {}
        if not host.out_of_date:
            return found  # patch-current hosts contribute nothing
        for package, installed in host.installed.items():
            version = _version_release(installed)
            for patch in self._by_package.get((package, host.sw_version), ()):
                cmp = rpmver.label_compare(("0", *version),
                                           ("0", *_split_vr(patch.packages[package])))
                if patch.repostate is RepoState.AVAILABLE and cmp >= 0:
                    found[patch.id] = PARTIAL_REMOVE
                elif patch.repostate is RepoState.APPLIED and cmp < 0:
                    found[patch.id] = PARTIAL_APPLY
        if not host.to_remove and not host.missing_pkgs:
            return found
        personality = "-".join(host.subfunctions) or host.nodetype
        for patch in self.patches.values():
            listed = patch.personalities.get(personality, ())
            if patch.repostate is RepoState.AVAILABLE and \
                    any(p in listed for p in host.to_remove):
                found[patch.id] = PARTIAL_REMOVE
            elif patch.repostate is RepoState.APPLIED and \
                    any(p in listed for p in host.missing_pkgs):
                found[patch.id] = PARTIAL_APPLY
        return found

    # -- derived states -------------------------------------------------------------
    def patch_state(self, patch_id: str) -> str:
        patch = self.patches[patch_id]
        if patch.repostate is RepoState.COMMITTED:
            return RepoState.COMMITTED.value
        if not self.hosts:
            return NOT_APPLICABLE
        if self.interim.get(patch_id):
            return PARTIAL_APPLY if patch.repostate is RepoState.APPLIED else PARTIAL_REMOVE
        counts = self._counts.get(patch_id, {})
        for state in (PARTIAL_APPLY, PARTIAL_REMOVE):
            if counts.get(state):
                return state
        return patch.repostate.value

    def allow_insvc_patching(self) -> bool:
        """False while any reboot-required patch is partially applied or removed."""
        return not any(self.patch_state(pid) in (PARTIAL_APPLY, PARTIAL_REMOVE) and
                       patch.reboot_required != "N" for pid, patch in self.patches.items())

    def host_view(self, name: str, allow_insvc: bool | None = None,
                  packages: bool = True) -> dict:
        """One host as ``query_hosts`` returns it; without ``packages`` its package
        lists are left out (what orchestration polls, for every host of a step)."""
        host = self.hosts[name]
        if allow_insvc is None:
            allow_insvc = self.allow_insvc_patching()
        interim = any(name in hosts for hosts in self.interim.values())
        view = {
            "ip": host.ip, "hostname": name, "patch_current": not host.out_of_date,
            "secs_since_ack": max(0, int(time.time() - self.last_report.get(name, 0))),
            "patch_failed": host.patch_failed, "stale_details": False,
            "nodetype": host.nodetype,
            "subfunctions": list(host.subfunctions), "sw_version": host.sw_version,
            "state": host.state,
            "requires_reboot": host.node_is_patched or (host.out_of_date and not allow_insvc),
            "allow_insvc_patching": allow_insvc, "interim_state": interim}
        if packages:
            view.update(installed=dict(host.installed), to_remove=list(host.to_remove),
                        missing_pkgs=list(host.missing_pkgs),
                        duplicated_pkgs=dict(host.duplicated_pkgs))
        else:       # the agent's own flag: it installed and has not rebooted since
            view["node_is_patched"] = host.node_is_patched
        return view


def _version_release(installed: str) -> tuple[str, str]:
    """"[e:]v-r@arch" -> (v, r), epoch stripped as §2.2 says."""
    evr = installed.split("@", 1)[0]
    _, version, release = rpmver.split_evr(evr)
    return version, release


def _split_vr(text: str) -> tuple[str, str]:
    version, _, release = text.rpartition("-")
    return version, release
