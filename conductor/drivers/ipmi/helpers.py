"""Reused daemon threads for the pyghmi exchanges of the BMC channels.

Every IPMI exchange runs on a helper thread so that a caller can stop waiting
for pyghmi, which may block far longer than ``[ipmi] command_timeout``
(conductor/drivers/ipmi/client.py). A deploy sends some fifteen IPMI commands
per node; starting a thread for each cost more CPU than the command (thread
creation, and the hand-over of the interpreter lock to the new thread and back).
Here an idle helper takes the next exchange and a new one starts only when every
helper is busy, so a hung exchange keeps its thread as before and never delays
another; a helper idle for ``IDLE_EXIT`` seconds ends. Helpers are daemon
threads: one stuck in pyghmi does not hold up the process's exit.
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

#: Seconds an idle helper waits for work before it ends.
IDLE_EXIT = 60.0


class HelperThreads:
    """Runs callables on reused daemon threads; never queues behind a busy one."""

    def __init__(self, name: str = "ipmi-exchange", idle_exit: float = IDLE_EXIT):
        self.name, self.idle_exit = name, idle_exit
        self._jobs: queue.SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...]]] = \
            queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0        # helpers waiting for a job that no job has claimed yet
        self._started = 0

    def run(self, func: Callable[..., Any], *args: Any) -> None:
        """Start ``func(*args)`` now on an idle helper, or on a new one."""
        with self._lock:
            reuse = self._idle > 0
            if reuse:
                self._idle -= 1       # that helper is this job's: it will not end
            else:
                self._started += 1
                number = self._started
        self._jobs.put((func, args))
        if not reuse:
            threading.Thread(target=self._serve, name=f"{self.name}-{number}",
                             daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                func, args = self._jobs.get(timeout=self.idle_exit)
            except queue.Empty:
                with self._lock:
                    if self._idle > 0:   # no job is on its way to the idle helpers
                        self._idle -= 1
                        return
                continue                 # every idle helper is claimed: one job is ours
            try:
                func(*args)
            finally:
                with self._lock:
                    self._idle += 1
