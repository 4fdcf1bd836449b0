"""The deploy's check of an image URL before the node reboots (a HEAD request).

A wrong image URL must fail the deploy before the node reboots into the ramdisk,
as Ironic validates the image href. The checks share one HTTP session (a fleet's
checks to one image server share its connection), and a URL that answered within
the last ``TTL`` seconds is not asked again: a fleet deployed from one image asks
its server once, not once per node (a request costs the conductor ~3 ms of CPU in
``requests``). Failures are never remembered; an image that disappears after its
check still fails the deploy, when the agent downloads it.
"""
from __future__ import annotations

import collections
import threading
import time
from urllib.parse import urlparse

import requests

from conductor import errors

#: Seconds a successful check of a URL is trusted.
TTL = 30.0
#: URLs remembered at most (least recently checked forgotten first).
MAX_URLS = 256


class ImageChecks:
    """HEAD of http(s) image URLs on one session, recent successes remembered."""

    def __init__(self, ttl: float = TTL, max_urls: int = MAX_URLS):
        self.ttl, self.max_urls = ttl, max_urls
        self.session = requests.Session()
        self._ok: collections.OrderedDict[str, float] = collections.OrderedDict()
        self._lock = threading.Lock()

    def check(self, url: str, timeout: float) -> None:
        """DriverError unless ``url`` answers a HEAD (redirects followed) below 400;
        other schemes (file) are the agent's to read."""
        if urlparse(url).scheme not in ("http", "https"):
            return
        now = time.monotonic()
        with self._lock:
            checked = self._ok.get(url)
        if checked is not None and now - checked < self.ttl:
            return
        try:
            response = self.session.head(url, timeout=timeout, allow_redirects=True)
        except requests.RequestException as exc:
            raise errors.DriverError(reason=f"validation of image href {url} failed: "
                                            f"{type(exc).__name__}: {exc}") from None
        if response.status_code >= 400:
            raise errors.DriverError(reason=f"validation of image href {url} failed: HTTP "
                                            f"{response.status_code}")
        with self._lock:
            self._ok[url] = now
            self._ok.move_to_end(url)
            while len(self._ok) > self.max_urls:
                self._ok.popitem(last=False)

    def close(self) -> None:
        self.session.close()
