"""A node's DNS records as the conductor remembers them in driver_internal_info.

``dns_records`` holds what is registered now, ``dns_pending`` what is still to be
done (conductor/dns/registration.py); a deleted node's records move to the
``dns_pending_removals`` table (conductor/dns/removals.py). Both read them here.
"""
from __future__ import annotations

import dataclasses

from conductor.dns import rfc2136 as dns

RECORDS_KEY = "dns_records"
PENDING_KEY = "dns_pending"


@dataclasses.dataclass(frozen=True)
class HostRecords:
    """One host name and the addresses it points to (and that point back to it)."""

    label: str
    fqdn: str
    addresses: tuple[str, ...]

    def to_dict(self) -> dict:
        return {"label": self.label, "fqdn": self.fqdn, "addresses": list(self.addresses)}

    @classmethod
    def from_dict(cls, value) -> HostRecords | None:
        if not isinstance(value, dict) or not value.get("label"):
            return None
        return cls(str(value["label"]), str(value.get("fqdn") or value["label"]),
                   tuple(dns.split_addresses(value.get("addresses"))[0]))

    def without(self, other: HostRecords | None) -> HostRecords | None:
        """What of these records ``other`` does not cover (None when nothing)."""
        if other is None or other.fqdn != self.fqdn:
            return self
        rest = tuple(a for a in self.addresses if a not in other.addresses)
        return dataclasses.replace(self, addresses=rest) if rest else None


def describe(records) -> str:
    return "; ".join(f"{r.fqdn} -> {', '.join(r.addresses)}" for r in records) or "none"
