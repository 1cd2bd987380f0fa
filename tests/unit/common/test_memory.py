"""Freed heap memory goes back to the system, so a processor's size follows its state."""

from __future__ import annotations

import os
import sys

import pytest

from common.memory import release_free_memory


def rss_kb() -> int:
    with open(f"/proc/{os.getpid()}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; glibc")
def test_memory_freed_by_many_small_objects_is_returned() -> None:
    """Objects below glibc's mmap threshold are freed into its heap, which keeps the pages
    while a few survivors are scattered among them; after the release the resident size is
    back near where it started."""
    before = rss_kb()
    garbage = [bytearray(8000) for _ in range(25_000)]  # ~200 MB on the C heap
    survivors = garbage[::50]  # pin the heap: it cannot shrink from its top
    filled = rss_kb()
    del garbage
    held = rss_kb()
    assert release_free_memory()
    after = rss_kb()
    assert filled - before > 150_000
    assert held - before > (filled - before) / 2  # freed, yet still resident
    assert after - before < (filled - before) / 4
    assert len(survivors) == 500
