"""Output formatters, chosen from a table: table, json, value."""
from __future__ import annotations

import json
import sys


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def table(rows: list[dict], columns: list[str], out=None) -> None:
    out = out or sys.stdout
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    print(line, file=out)
    print("| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths)) + " |", file=out)
    print(line, file=out)
    for row in cells:
        print("| " + " | ".join(v.ljust(w) for v, w in zip(row, widths)) + " |", file=out)
    print(line, file=out)


def as_json(rows, columns, out=None) -> None:
    out = out or sys.stdout
    data = [{c: r.get(c) for c in columns} for r in rows] if columns else rows
    json.dump(data, out, indent=2, sort_keys=False)
    out.write("\n")


def value(rows: list[dict], columns: list[str], out=None) -> None:
    out = out or sys.stdout
    for row in rows:
        print(" ".join(_cell(row.get(c)) for c in columns), file=out)


FORMATTERS = {"table": table, "json": as_json, "value": value}


def show(obj: dict, fmt: str, out=None) -> None:
    out = out or sys.stdout
    """One object as a Field/Value table (or JSON)."""
    if fmt == "json":
        json.dump(obj, out, indent=2)
        out.write("\n")
        return
    rows = [{"Field": k, "Value": v} for k, v in obj.items() if k != "links"]
    FORMATTERS[fmt](rows, ["Field", "Value"], out)


class Progress:
    """A one-line progress bar on stderr (plain lines when not a terminal)."""

    def __init__(self, total: int, label: str, out=None, width: int = 30):
        out = out or sys.stderr
        self.total, self.label, self.out, self.width = max(total, 1), label, out, width
        self.done = 0
        self.tty = out.isatty()

    def advance(self, n: int = 1, note: str = "") -> None:
        self.done += n
        filled = int(self.width * self.done / self.total)
        bar = "#" * filled + "." * (self.width - filled)
        text = f"{self.label} [{bar}] {self.done}/{self.total} {note}"
        if self.tty:
            self.out.write("\r" + text.ljust(100))
            if self.done >= self.total:
                self.out.write("\n")
        elif self.done >= self.total or self.done == 1:
            self.out.write(text + "\n")
        self.out.flush()
