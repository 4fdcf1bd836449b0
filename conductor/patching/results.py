"""The outcome of one patch operation, in the shape StarlingX's API returns it."""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class Result:
    """info / warning / error text of one operation (each line newline-terminated).

    ``sw-patch`` judges an operation by its ``error`` text, so refusals are collected
    here (an upload of several files reports each one) rather than raised to the API.
    """

    info: str = ""
    warning: str = ""
    error: str = ""

    def add(self, kind: str, line: str) -> None:
        setattr(self, kind, getattr(self, kind) + line + "\n")

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)
