"""Consistent hashing of node UUIDs onto conductors, as Ironic (tooz's HashRing).

Each conductor owns ``2 ** partition_exponent`` points on a ring of MD5 values (its
name hashed again and again); a node belongs to the conductor of the first point at
or after the MD5 of its UUID. Adding a conductor takes over only the arcs its points
cut; removing one hands only its arcs to the next points: about 1/N of the nodes
move, and only to or from the conductor that came or went. Pure: no I/O, no clock.
"""
from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterable


def _point(digest: bytes) -> int:
    return int.from_bytes(digest, "big")


class HashRing:
    """The ring of one (hardware type, conductor group): ``conductors`` are names."""

    def __init__(self, conductors: Iterable[str], partition_exponent: int = 5):
        if not 0 <= partition_exponent <= 16:
            raise ValueError("partition_exponent must be between 0 and 16")
        self.conductors = frozenset(conductors)
        owners: dict[int, str] = {}
        for name in sorted(self.conductors):
            key = name.encode("utf-8")
            running = hashlib.md5(usedforsecurity=False)
            for _ in range(2 ** partition_exponent):
                running.update(key)         # tooz: the same hash object, fed again
                owners[_point(running.digest())] = name
        self._points = sorted(owners)
        self._owners = [owners[p] for p in self._points]

    def _start(self, key: str) -> int:
        point = _point(hashlib.md5(key.encode("utf-8"), usedforsecurity=False).digest())
        position = bisect.bisect(self._points, point)
        return position if position < len(self._points) else 0

    def conductors_for(self, key: str, replicas: int = 1) -> list[str]:
        """The first ``replicas`` distinct conductors on the ring from ``key``'s point
        (Ironic's hash_distribution_replicas), the primary first; [] if empty."""
        if not self._points:
            return []
        wanted = min(max(replicas, 1), len(self.conductors))
        found: list[str] = []
        position = self._start(key)
        while len(found) < wanted:
            owner = self._owners[position]
            if owner not in found:
                found.append(owner)
            position = (position + 1) % len(self._points)
        return found

    def conductor_for(self, key: str) -> str | None:
        found = self.conductors_for(key)
        return found[0] if found else None
