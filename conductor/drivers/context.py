"""State that driver instances of one process share, passed explicitly.

Interfaces are built per task; what must outlive a task (BMC sessions, per-BMC
rate limits, the secrets cipher) lives here, created once by the appliance.
"""
from __future__ import annotations

import threading
from typing import Callable, TypeVar

T = TypeVar("T")


class DriverContext:
    """Per-process driver resources: settings plus lazily created shared objects."""

    def __init__(self, settings=None, cipher=None):
        self.settings = settings
        self.cipher = cipher
        self._shared: dict[str, object] = {}
        self._lock = threading.Lock()

    def shared(self, key: str, factory: Callable[[], T]) -> T:
        """The object stored under ``key``, created by ``factory`` on first use."""
        with self._lock:
            if key not in self._shared:
                self._shared[key] = factory()
            return self._shared[key]  # type: ignore[return-value]

    def get(self, key: str):
        """The object stored under ``key`` if something created it, else None."""
        with self._lock:
            return self._shared.get(key)

    def close(self) -> None:
        """Close shared objects that can be closed (sessions, pools)."""
        with self._lock:
            for value in self._shared.values():
                close = getattr(value, "close", None)
                if callable(close):
                    close()
            self._shared.clear()
