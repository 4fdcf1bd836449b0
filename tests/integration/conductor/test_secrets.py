"""conductor.secrets under concurrency: conductors starting at once on an empty data
directory all end up with the one key (the rest: tests/unit/conductor/test_secrets.py)."""
from __future__ import annotations

import threading

from conductor import secrets


def test_concurrent_first_starts_agree_on_one_key(tmp_path):
    path = tmp_path / "keys" / "secrets.key"
    keys, barrier = [], threading.Barrier(8)

    def start():
        barrier.wait()
        keys.append(secrets.load_or_create_key(path))
    threads = [threading.Thread(target=start) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(keys)) == 1 and keys[0] == path.read_bytes().strip()
