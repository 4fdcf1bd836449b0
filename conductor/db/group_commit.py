"""Group commit: what arrives while a batch is being written is written together next.

A burst of small writes (a lease round's releases, a fleet's Omaha event reports)
otherwise queues for the write lock one transaction each. Here the first submitter
takes the writer's turn and writes everything queued by then in one transaction;
those that arrive meanwhile queue, and the first of them writes the next batch. Each
submitter returns only when its own batch is committed (or raises its error), so
nothing is answered before it is durable, and a batch that fails records none of its
items: each of them raises.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class _Entry(Generic[T, R]):
    def __init__(self, item: T):
        self.item = item
        self.turn = threading.Event()    #: written, or to write the next batch
        self.done = False
        self.result: R | None = None
        self.error: Exception | None = None


class GroupCommit(Generic[T, R]):
    """``write(items)`` writes a batch in one transaction and returns a result per
    item; it runs holding ``turn`` (a lock-like object: the process's write turn)."""

    def __init__(self, write: Callable[[list[T]], list[R]],
                 turn: AbstractContextManager[object]):
        self._write, self._turn = write, turn
        self._lock = threading.Lock()
        self._queue: list[_Entry[T, R]] = []   # items for the next transaction
        self._leading = False                  # a thread writes or is to write the queue

    def submit(self, item: T) -> R:
        """``item``'s result once its batch is committed; the batch's error if not."""
        entry: _Entry[T, R] = _Entry(item)
        with self._lock:
            self._queue.append(entry)
            lead, self._leading = not self._leading, True
        if not lead:
            entry.turn.wait()          # written by another, or this one writes next
        if not entry.done:
            self._write_queued()
        if entry.error is not None:
            raise entry.error
        return entry.result  # type: ignore[return-value]

    def pending(self) -> int:
        """Items waiting for the next writer (tests)."""
        with self._lock:
            return len(self._queue)

    def _write_queued(self) -> None:
        """Write every queued item in one transaction, then let the first one queued
        meanwhile write the next batch: each submitter returns as soon as its own
        batch is written."""
        with self._turn:
            with self._lock:
                batch, self._queue = self._queue, []
            self._write_batch(batch)
        with self._lock:
            if self._queue:
                self._queue[0].turn.set()
            else:
                self._leading = False

    def _write_batch(self, batch: list[_Entry[T, R]]) -> None:
        try:
            results = self._write([entry.item for entry in batch])
            for entry, result in zip(batch, results, strict=True):
                entry.result = result
        except Exception as exc:  # noqa: BLE001 - raised by each submitter of the batch
            for entry in batch:
                entry.error, entry.result = exc, None
        finally:
            for entry in batch:
                entry.done = True
                entry.turn.set()
