"""What the console's fleet page asks of the conductor: counts by state, and one page
of nodes filtered, searched and sorted in the database (never the whole fleet).

The request's text is parsed here once into a :class:`FleetQuery`; a bad value is
an InvalidParameter that says which field and what is accepted.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from conductor import errors, states
from conductor.db.fleet import SORT_COLUMNS, FleetRows, NodeFilter

#: Provision states that count as failed (the fleet's "failed" filter).
FAILED_STATES = tuple(s.value for s in states.State if s.value.endswith(" failed"))
PAGE_SIZES = (25, 50, 100, 200)
DEFAULT_PAGE_SIZE = 50
MAX_SEARCH = 255
#: Seconds the filter menus' driver and group lists are kept.
CHOICES_TTL = 10.0
#: Three-way filters: the form's text -> the value.
_TRI = {"": None, "any": None, "yes": True, "no": False}


@dataclasses.dataclass(frozen=True, slots=True)
class FleetQuery:
    """One fleet page as asked: filter, sort, page number (from 1) and size."""

    filter: NodeFilter = NodeFilter()
    sort: str = "name"
    descending: bool = False
    page: int = 1
    size: int = DEFAULT_PAGE_SIZE

    @classmethod
    def parse(cls, args: Mapping[str, str]) -> FleetQuery:
        """From the page's query string; InvalidParameter names a bad field."""
        search = args.get("q", "").strip()
        if len(search) > MAX_SEARCH or "\x00" in search:
            raise errors.InvalidParameter(f"Search text is at most {MAX_SEARCH} "
                                          "characters, without NUL.")
        wanted = NodeFilter(search=search,
                            provision_state=_choice(args, "state", [s.value for s in states.State]),
                            driver=_text(args, "driver"),
                            conductor_group=args.get("group") or None,
                            maintenance=_tri(args, "maintenance"),
                            failed=_tri(args, "failed"))
        sort = args.get("sort", "name")
        if sort not in SORT_COLUMNS:
            raise errors.InvalidParameter(f"Cannot sort by {sort!r}: choose one of "
                                          f"{', '.join(SORT_COLUMNS)}.")
        return cls(filter=wanted, sort=sort, descending=args.get("dir") == "desc",
                   page=_number(args, "page", 1, 1_000_000),
                   size=_choice_int(args, "size", PAGE_SIZES, DEFAULT_PAGE_SIZE))


def _text(args: Mapping[str, str], key: str) -> str | None:
    value = args.get(key) or None
    if value is not None and (len(value) > MAX_SEARCH or "\x00" in value):
        raise errors.InvalidParameter(f"{key} is at most {MAX_SEARCH} characters.")
    return value


def _choice(args: Mapping[str, str], key: str, allowed: list[str]) -> str | None:
    value = args.get(key) or None
    if value is not None and value not in allowed:
        raise errors.InvalidParameter(f"Unknown {key} {value[:64]!r}: choose one of "
                                      f"{', '.join(allowed)}.")
    return value


def _tri(args: Mapping[str, str], key: str) -> bool | None:
    value = args.get(key, "")
    if value not in _TRI:
        raise errors.InvalidParameter(f"{key} must be yes, no or any, not {value[:64]!r}.")
    return _TRI[value]


def _number(args: Mapping[str, str], key: str, low: int, high: int) -> int:
    text = args.get(key) or str(low)
    if not text.isdigit() or not low <= int(text) <= high:
        raise errors.InvalidParameter(f"{key} must be a whole number from {low} to "
                                      f"{high}, not {text[:64]!r}.")
    return int(text)


def _choice_int(args: Mapping[str, str], key: str, allowed: tuple[int, ...],
                default: int) -> int:
    text = args.get(key) or str(default)
    if not text.isdigit() or int(text) not in allowed:
        raise errors.InvalidParameter(f"{key} must be one of "
                                      f"{', '.join(map(str, allowed))}, not {text[:64]!r}.")
    return int(text)


def _label(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


@dataclasses.dataclass(frozen=True, slots=True)
class FleetPage:
    rows: list[dict[str, Any]]
    total: int
    query: FleetQuery

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.query.size))


class Fleet:
    """The fleet page's queries (conductor/db/fleet.py), for the console's views."""

    def __init__(self, engine: sa.Engine):
        self.rows = FleetRows(engine, FAILED_STATES)
        self._choices: tuple[float, dict[str, list[str]]] | None = None

    def counts(self) -> dict[str, dict[str, int]]:
        """Nodes by provision state, power state, maintenance and fault, by label
        (no value: "none"; maintenance: "yes"/"no"), labels sorted; "total": {"all": n}."""
        raw = self.rows.counts()
        total = raw.pop("total")
        labelled = {name: dict(sorted((_label(key), n) for key, n in values.items()))
                    for name, values in raw.items()}
        return labelled | {"total": {"all": total[None]}}

    def page(self, query: FleetQuery) -> FleetPage:
        offset = (query.page - 1) * query.size
        rows, total = self.rows.page(query.filter, query.sort, query.descending, offset,
                                     query.size)
        return FleetPage(rows, total, query)

    def choices(self) -> dict[str, list[str]]:
        """The filter menus: provision states, drivers and groups in use (re-read at
        most every CHOICES_TTL s: two scans of the fleet that a menu need not repeat)."""
        now = time.monotonic()
        if self._choices is None or now - self._choices[0] > CHOICES_TTL:
            self._choices = (now, {"state": [s.value for s in states.State],
                                   "driver": self.rows.distinct("driver"),
                                   "group": self.rows.distinct("conductor_group")})
        return self._choices[1]
