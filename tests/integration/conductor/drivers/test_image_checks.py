"""The deploy's image check (conductor/drivers/deploy/images.py) against a real HTTP
server on 127.0.0.1: a fleet deployed from one image asks its server once within the
TTL; a failing URL fails every time it is asked, with the server's answer."""
from __future__ import annotations

from http.server import SimpleHTTPRequestHandler

import pytest

from conductor import errors
from conductor.drivers.deploy.images import ImageChecks
from tests.functional.helpers import serve_directory


@pytest.fixture
def image_server(tmp_path):
    (tmp_path / "disk.img").write_bytes(b"\0" * 4096)
    heads: list[str] = []

    class Counting(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_HEAD(self):
            heads.append(self.path)
            super().do_HEAD()

    with serve_directory(tmp_path, Counting) as url:
        yield url, heads


def test_one_head_for_a_fleet_within_the_ttl(image_server):
    url, heads = image_server
    checks = ImageChecks(ttl=300)
    try:
        for _ in range(50):
            checks.check(f"{url}/disk.img", timeout=10)
        assert heads == ["/disk.img"]
        expired = ImageChecks(ttl=0)  # a TTL of 0: every check asks again
        for _ in range(3):
            expired.check(f"{url}/disk.img", timeout=10)
        assert heads == ["/disk.img"] * 4
    finally:
        checks.close()


def test_a_missing_image_fails_every_time(image_server):
    url, heads = image_server
    checks = ImageChecks(ttl=300)
    try:
        for _ in range(2):
            with pytest.raises(errors.DriverError, match="HTTP 404"):
                checks.check(f"{url}/gone.img", timeout=10)
        assert heads == ["/gone.img", "/gone.img"]
        checks.check("file:///srv/images/disk.img", timeout=10)  # the agent's to read
    finally:
        checks.close()
