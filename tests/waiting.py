"""The one way a test waits for something to happen: poll a condition until it holds.

Every tier uses ``wait_until`` instead of a hand-written ``while``/``time.sleep`` loop
and instead of a bare ``time.sleep`` "to let it happen": the wait ends as soon as the
condition holds, and a timeout fails the test with a message that says what never
happened (and the last thing seen). Named helpers (``wait_node``, ``wait_state``, ...)
wrap it with their condition.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

#: Generous for a loaded 2-core machine; a timeout is a failure, never a measurement.
DEFAULT_TIMEOUT = 30.0
DEFAULT_INTERVAL = 0.05


def wait_until(predicate: Callable[[], T], timeout: float = DEFAULT_TIMEOUT,
               interval: float = DEFAULT_INTERVAL, message: str | Callable[[], str] = "",
               ignore: type[BaseException] | tuple[type[BaseException], ...] = ()) -> T:
    """Call ``predicate`` every ``interval`` s until it returns something truthy; return it.

    After ``timeout`` s fail with an AssertionError: ``message`` (a string, or a callable
    called then, for details known only at the end such as a server's log), the last
    value the predicate returned and the last ignored exception. Exceptions of the
    ``ignore`` types count as "not yet" (e.g. ``ConnectionError`` while a server starts);
    any other exception propagates at once.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    error: BaseException | None = None
    while True:
        try:
            last = predicate()
            error = None
        except ignore as exc:
            last, error = None, exc
        else:
            if last:
                return last
        if time.monotonic() >= deadline:
            what = message() if callable(message) else message
            detail = f"; last error: {error!r}" if error is not None else ""
            raise AssertionError(f"timed out after {timeout:g} s waiting for "
                                 f"{what or getattr(predicate, '__name__', 'a condition')} "
                                 f"(last value: {last!r}{detail})")
        time.sleep(interval)
