"""Page cache control shared by the disk benchmarks (image_write, qcow2_write, delta)."""
from __future__ import annotations

import os
from pathlib import Path


def drop_caches() -> bool:
    """Write back and drop the page cache (root only); whether it was dropped."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False  # not root: the figures then include page-cache effects
    return True
