"""What a host must change to match its repos (specs/starlingx-patching.md §4.4).

Pure functions over package lists: the engine feeds them ``rpm -qa`` and the
repos' available packages, so the decision logic is unit-testable without rpm.
For each installed (name, arch) the latest available EVR wins: equal means
nothing to do, older installed means upgrade, newer installed means downgrade
(how a removed patch is undone), absent from every repo means erase. Packages of
the comps group ``updates-<personality>`` that are not installed are missing.
"""
from __future__ import annotations

import dataclasses

from ramdisk_agent.wire.packages import Package
from ramdisk_agent.wire.rpmver import label_compare

#: rpm's pseudo-packages for imported GPG keys are never in a repo and never erased.
IGNORED = frozenset({"gpg-pubkey"})


@dataclasses.dataclass
class Plan:
    """The one transaction that makes a host current."""

    upgrades: list[tuple[Package, Package]] = dataclasses.field(default_factory=list)
    downgrades: list[tuple[Package, Package]] = dataclasses.field(default_factory=list)
    erase: list[Package] = dataclasses.field(default_factory=list)
    missing: list[str] = dataclasses.field(default_factory=list)
    #: name -> arch -> installed versions, when one (name, arch) is installed twice.
    duplicated: dict[str, dict[str, list[str]]] = dataclasses.field(default_factory=dict)

    @property
    def changes(self) -> bool:
        return bool(self.upgrades or self.downgrades or self.erase or self.missing)

    def installed_report(self) -> dict[str, str]:
        """name -> installed ``[e:]v-r@arch`` of every package whose version must change."""
        return {old.name: old.report_version for old, _ in self.upgrades + self.downgrades}

    def summary(self) -> dict[str, list[str]]:
        return {"upgrade": [new.nevra for _, new in self.upgrades],
                "downgrade": [new.nevra for _, new in self.downgrades],
                "erase": [pkg.nevra for pkg in self.erase],
                "install": list(self.missing)}

    def forward_only(self) -> Plan:
        """Upgrades and missing installs only: a fresh image keeps packages the repos lack."""
        return Plan(upgrades=list(self.upgrades), missing=list(self.missing),
                    duplicated=dict(self.duplicated))

    def commands(self) -> list[str]:
        """dnf shell lines doing the whole plan in one transaction (exact NEVRAs)."""
        lines = []
        for verb, pkgs in (("upgrade", [new.nevra for _, new in self.upgrades]),
                           ("downgrade", [new.nevra for _, new in self.downgrades]),
                           ("remove", [pkg.nevra for pkg in self.erase]),
                           ("install", list(self.missing))):
            if pkgs:
                lines.append(f"{verb} {' '.join(pkgs)}")
        return lines


def latest(available: list[Package]) -> dict[tuple[str, str], Package]:
    """(name, arch) -> the highest EVR among every enabled repo's packages."""
    best: dict[tuple[str, str], Package] = {}
    for pkg in available:
        key = (pkg.name, pkg.arch)
        if key not in best or label_compare(pkg.evr, best[key].evr) > 0:
            best[key] = pkg
    return best


def duplicates(installed: list[Package]) -> dict[str, dict[str, list[str]]]:
    seen: dict[tuple[str, str], list[Package]] = {}
    for pkg in installed:
        seen.setdefault((pkg.name, pkg.arch), []).append(pkg)
    found: dict[str, dict[str, list[str]]] = {}
    for (name, arch), pkgs in seen.items():
        if len(pkgs) > 1:
            found.setdefault(name, {})[arch] = sorted(p.report_version.split("@")[0]
                                                      for p in pkgs)
    return found


def compute(installed: list[Package], available: list[Package],
            group: list[str]) -> Plan:
    """The plan for ``installed`` against ``available`` and the personality's group."""
    best = latest(available)
    plan = Plan(duplicated=duplicates(installed))
    for pkg in sorted(installed, key=lambda p: (p.name, p.arch)):
        if pkg.name in IGNORED:
            continue
        target = best.get((pkg.name, pkg.arch))
        if target is None:
            plan.erase.append(pkg)
            continue
        order = label_compare(pkg.evr, target.evr)
        if order < 0:
            plan.upgrades.append((pkg, target))
        elif order > 0:
            plan.downgrades.append((pkg, target))
    names = {pkg.name for pkg in installed}
    plan.missing = sorted({name for name in group if name not in names})
    return plan

