"""pyghmi's session code runs on a fine monotonic clock once the conductor has BMC
channels: with ``os.times()`` (10 ms ticks) its IO thread spun through select() with
no timeout until the next tick for every waiter whose deadline fell on the current
one (27 wake-ups per IPMI command, measured)."""
from __future__ import annotations

import time

from pyghmi.ipmi.private import session as pyghmi_session

from conductor.config import from_options
from conductor.drivers.ipmi.client import BmcChannels


def test_bmc_channels_give_pyghmi_a_fine_clock(monkeypatch):
    monkeypatch.setattr(pyghmi_session, "_monotonic_time", pyghmi_session._monotonic_time)
    BmcChannels(from_options({}))
    assert pyghmi_session._monotonic_time is time.monotonic
    readings = {pyghmi_session._monotonic_time() for _ in range(1000)}
    assert len(readings) > 1      # it moves within what a 10 ms tick would freeze
