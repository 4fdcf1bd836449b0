"""One installed or available RPM (its NEVRA), and the ``rpm --qf`` line that prints it.

Shared by the host agent (ramdisk_agent/host: ``rpm -qa``, repo metadata, the
upgrade plan) and the conductor (conductor/patching/repo.py reads patch RPM
headers with the same query format), so both parse the same line the same way.
"""
from __future__ import annotations

import dataclasses

#: ``rpm --qf``: one ``NAME\\tEPOCH\\tVERSION\\tRELEASE\\tARCH`` line per package.
QUERY_FORMAT = "%{NAME}\\t%{EPOCHNUM}\\t%{VERSION}\\t%{RELEASE}\\t%{ARCH}\\n"


@dataclasses.dataclass(frozen=True)
class Package:
    """One NEVRA, as rpm and dnf print it."""

    name: str
    epoch: str
    version: str
    release: str
    arch: str

    @property
    def evr(self) -> tuple[str, str, str]:
        return (self.epoch or "0", self.version, self.release)

    @property
    def nevra(self) -> str:
        """``name-[epoch:]version-release.arch``, the form dnf accepts for an exact package."""
        epoch = f"{self.epoch}:" if self.epoch not in ("", "0") else ""
        return f"{self.name}-{epoch}{self.version}-{self.release}.{self.arch}"

    @property
    def report_version(self) -> str:
        """``[e:]v-r@arch``: the form of the report's ``installed`` dict (§2.2)."""
        epoch = f"{self.epoch}:" if self.epoch not in ("", "0") else ""
        return f"{epoch}{self.version}-{self.release}@{self.arch}"

    @classmethod
    def parse_line(cls, line: str) -> Package:
        """One ``NAME\\tEPOCH\\tVERSION\\tRELEASE\\tARCH`` line (QUERY_FORMAT)."""
        name, epoch, version, release, arch = line.split("\t")[:5]
        return cls(name, "0" if epoch in ("", "(none)") else epoch, version, release, arch)
