"""Memory a left room freed goes back to the OS (see p2p_nb/memory.py)."""

from __future__ import annotations

import platform

import pytest

from p2p_nb.memory import release_memory


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS"))


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_freed_heap_pages_go_back_to_the_os() -> None:
    # ~100 MB of blocks too big for pymalloc, so they live on glibc's heap ...
    blocks = [bytes(2000) for _ in range(50_000)]
    keep = bytes(2000)  # ... with a live one after them: the heap cannot shrink by itself
    del blocks
    before = rss_mb()
    release_memory()
    after = rss_mb()
    assert before - after > 50, (before, after)
    assert keep == bytes(2000)
