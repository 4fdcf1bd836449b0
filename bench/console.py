"""The operator console at fleet size: the fleet page's paint and response time, what
open live pages cost an idle appliance, and how fast a state change reaches a page.

Fills a fresh data dir with ``--nodes`` nodes (default 10,000; bench/metrics.py's bulk
INSERT), starts ``metalcast serve`` on it (a subprocess on a free loopback port,
stopped by PID), then prints:

* the server's response time for ``/ui/fleet`` (first page, and a filtered, sorted
  page deep in the fleet): p50/p99 over ``--runs`` GETs on one keep-alive session;
* the fleet page's first useful paint in headless Chromium (Debian's chromium and
  chromedriver): the Performance API's first-contentful-paint of the page, whose
  HTML already holds the counts and the table (server-rendered), and the moment the
  ``#ready`` marker after the table is in the DOM, per fresh navigation;
* the server's CPU while idle (power sync off: the bulk-inserted nodes have no BMC)
  with no page open, with 1 and with ``--pages`` (50)
  live pages open (each an SSE stream of /ui/events; Python clients, since one
  browser opens at most six connections to a host), as % of one core;
* a state change's delay until an open node page in Chromium shows it: the node's
  maintenance flag toggled ``--changes`` times over the REST API, the delay measured
  from just before the PATCH to the page's MutationObserver (one clock: same host).

Targets (issue 18): paint <= 1 s, server p50 <= 100 ms, 50 pages <= 5 % CPU added,
a change visible <= 1 s p99.

Usage: .venv/bin/python bench/console.py [--nodes 10000] [--runs 100] [--pages 50]
                                         [--changes 100] [--window 20]
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import requests
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _server import ServeProcess
from metrics import fill

HEADERS = {"X-OpenStack-Ironic-API-Version": "latest", "Content-Type": "application/json"}


def p99_of(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = p99_of(ordered)
    return (f"p50 {statistics.median(ordered):7.1f} ms   p99 {p99:7.1f} ms   "
            f"max {ordered[-1]:7.1f} ms   (n={len(ordered)})")


def chromium() -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--disable-gpu", "--window-size=1366,900"):
        options.add_argument(arg)
    driver = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    return webdriver.Chrome(service=Service(driver), options=options)


def response_times(url: str, runs: int) -> None:
    for path in ("/ui/fleet", "/ui/fleet?state=active&sort=updated_at&dir=desc&page=100"
                 "&maintenance=no"):
        with requests.Session() as session:
            for _ in range(5):
                session.get(url + path, timeout=30).raise_for_status()
            samples = []
            for _ in range(runs):
                started = time.perf_counter()
                answer = session.get(url + path, timeout=30)
                samples.append((time.perf_counter() - started) * 1000)
                answer.raise_for_status()
        print(f"server  GET {path[:60]:<60} {percentiles(samples)}  {len(answer.content)} B")


def first_paint(driver: webdriver.Chrome, url: str, runs: int) -> list[float]:
    paints, ready = [], []
    for _ in range(runs):
        driver.get("about:blank")
        driver.get(f"{url}/ui/fleet")
        WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.ID, "ready"))
        fcp, marker = driver.execute_script(
            "const p = performance.getEntriesByName('first-contentful-paint')[0];"
            "const n = performance.getEntriesByType('navigation')[0];"
            "return [p ? p.startTime : null, n.domInteractive];")
        if fcp is not None:
            paints.append(fcp)
        ready.append(marker)
    print(f"chromium fleet page first-contentful-paint   {percentiles(paints)}")
    print(f"chromium fleet page table parsed (#ready)    {percentiles(ready)}")
    return paints


class Streams:
    """``count`` open /ui/events streams (plain sockets), each read by a thread."""

    def __init__(self, url: str, count: int):
        parts = urlsplit(url)
        self.sockets = []
        self.received = [0] * count
        for index in range(count):
            sock = socket.create_connection((parts.hostname, parts.port), timeout=60)
            sock.sendall(f"GET /ui/events HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                         "Accept: text/event-stream\r\n\r\n".encode())
            head = sock.recv(4096)
            assert head.startswith(b"HTTP/1.1 200"), head[:100]
            threading.Thread(target=self._read, args=(index, sock), daemon=True).start()
            self.sockets.append(sock)

    def _read(self, index: int, sock: socket.socket) -> None:
        try:
            while data := sock.recv(65536):
                self.received[index] += data.count(b"data:")
        except OSError:
            pass

    def close(self) -> None:
        for sock in self.sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


def idle_cpu(server: ServeProcess, window: float) -> float:
    """% of one core the server used over ``window`` seconds."""
    cpu, started = server.cpu_seconds(), time.monotonic()
    time.sleep(window)
    return (server.cpu_seconds() - cpu) / (time.monotonic() - started) * 100


def live_pages_cpu(server: ServeProcess, pages: int, window: float) -> None:
    base = idle_cpu(server, window)
    print(f"idle, no live page             {base:5.2f} % of a core")
    for count in (1, pages):
        streams = Streams(server.url, count)
        try:
            time.sleep(2)  # the publisher started, the streams settled
            used = idle_cpu(server, window)
        finally:
            streams.close()
        print(f"idle, {count:3d} live page(s) open    {used:5.2f} % of a core  "
              f"(added {used - base:+5.2f} %)")
        time.sleep(2)


def change_delay(driver: webdriver.Chrome, url: str, changes: int) -> list[float]:
    node = requests.get(f"{url}/v1/nodes?limit=1&maintenance=false", headers=HEADERS,
                        timeout=30).json()["nodes"][0]["uuid"]
    driver.get(f"{url}/ui/nodes/{node}")
    WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.ID, "ready"))
    WebDriverWait(driver, 30).until(
        lambda d: d.find_element(By.ID, "live-status").text == "live")
    driver.execute_script(
        "window.__seen = [];"
        "new MutationObserver(() => window.__seen.push(["
        "  document.getElementById('maintenance').textContent, Date.now()]))"
        ".observe(document.getElementById('maintenance'),"
        "  {childList: true, characterData: true, subtree: true});")
    delays = []
    with requests.Session() as session:
        for index in range(changes):
            wanted = index % 2 == 0
            sent = time.time() * 1000
            session.patch(f"{url}/v1/nodes/{node}", headers=HEADERS, timeout=30, json=[
                {"op": "replace", "path": "/maintenance", "value": wanted}]).raise_for_status()
            text = "yes" if wanted else "no"
            WebDriverWait(driver, 10, poll_frequency=0.02).until(
                lambda d, text=text: any(t == text for t, _ in
                                         d.execute_script("return window.__seen")))
            seen = driver.execute_script("const s = window.__seen; window.__seen = []; "
                                         "return s;")
            delays.append(next(at for t, at in seen if t == text) - sent)
    print(f"state change -> visible in an open page       {percentiles(delays)}")
    return delays


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--paints", type=int, default=20)
    parser.add_argument("--pages", type=int, default=50)
    parser.add_argument("--changes", type=int, default=100)
    parser.add_argument("--window", type=float, default=20.0)
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="metalcast-bench-console-"))
    try:
        started = time.perf_counter()
        fill(data_dir, args.nodes)
        print(f"{args.nodes} nodes written in {time.perf_counter() - started:.1f}s")
        # No power sync: the bulk-inserted nodes have no BMC, and a sweep of 10,000
        # failing nodes every 60 s would be measured instead of the pages.
        os.environ["METALCAST_CONDUCTOR_SYNC_POWER_STATE_INTERVAL"] = "0"
        with ServeProcess(data_dir) as server:
            time.sleep(2)
            live_pages_cpu(server, args.pages, args.window)
            response_times(server.url, args.runs)
            driver = chromium()
            try:
                paints = first_paint(driver, server.url, args.paints)
                delays = change_delay(driver, server.url, args.changes)
            finally:
                driver.quit()
        print(f"targets: paint <= 1000 ms (p50 {statistics.median(paints):.0f} ms); "
              f"change visible <= 1000 ms p99 ({p99_of(delays):.0f} ms); server p50 <= "
              "100 ms and 50 pages <= 5 % added: see above")
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
