"""CPU cost of the Omaha wire format per update check, in one process, no server.

What the update server spends on the format alone for one check: parse an
update_engine request (ping + updatecheck + an event) and render an ``ok`` answer
with a manifest; next to the same parse done with the stdlib's ElementTree (no
defusedxml, no bounds) and a render of ``noupdate``, so the cost of the hostile-XML
guards shows. The issue's server target (bench/omaha.py, later) is >= 1,500
checks/s end to end; this prints how much of a core the format takes of that.

    python bench/omaha_wire.py --seconds 3
"""
from __future__ import annotations

import argparse
import hashlib
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ramdisk_agent.wire import omaha

PAYLOAD = b"payload"


def _request() -> bytes:
    app = omaha.AppRequest(omaha.FLATCAR_APPID, "3510.2.0", "stable", "{boot}", "0" * 32,
                           "node-7", "metalcast", "1", "3374.2.0", "amd64-usr", "en-US",
                           ping=True, updatecheck=True,
                           events=(omaha.Event(3, 2, None, "3374.2.0"),))
    return omaha.render_request(omaha.Request((app,), omaha.OsInfo("Chateau", "CoreOS",
                                                                  "3510.2.0_x86_64"),
                                              "update_engine-0.4.10",
                                              "update_engine-0.4.10"))


def _answer(check: omaha.UpdateCheck) -> omaha.Response:
    return omaha.Response((omaha.AppResponse(omaha.FLATCAR_APPID, ping=True, events=1,
                                             updatecheck=check),), 3600)


def _rate(label: str, seconds: float, work) -> float:
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(100):
            work()
        count += 100
    rate = count / elapsed
    print(f"{label:<52} {rate:>10,.0f}/s  {1e6 / rate:8.1f} us")
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    seconds = parser.parse_args().seconds
    body = _request()
    sha = hashlib.sha256(PAYLOAD).digest()
    manifest = omaha.Manifest("3510.2.1", (omaha.Package("update.gz", 1 << 30,
                                                         hashlib.sha1(PAYLOAD).digest(),
                                                         sha),), sha)
    ok = _answer(omaha.UpdateCheck("ok", ("http://appliance/updates/v1/payloads/",),
                                   manifest))
    noupdate = _answer(omaha.UpdateCheck("noupdate"))
    print(f"request {len(body)} bytes; {seconds:.0f} s per line, one core")
    parse = _rate("parse_request (defusedxml + bounds)", seconds,
                  lambda: omaha.parse_request(body))
    _rate("ElementTree.fromstring alone (no guards)", seconds, lambda: ET.fromstring(body))
    render = _rate("render_response ok (manifest)", seconds,
                   lambda: omaha.render_response(ok))
    _rate("render_response noupdate", seconds, lambda: omaha.render_response(noupdate))
    both = 1 / (1 / parse + 1 / render)
    print(f"{'one check (parse + render ok)':<52} {both:>10,.0f}/s  "
          f"{100 * 1500 / both:.1f} % of a core at 1,500 checks/s")


if __name__ == "__main__":
    main()
