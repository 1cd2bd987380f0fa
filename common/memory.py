"""Giving freed memory back to the system, where the C library keeps it.

A long-running processor allocates and frees millions of short-lived objects (fetched records,
parsed bodies, events); glibc keeps the freed pages in its heaps for reuse, so the process's
resident size ratchets up to its busiest moment and stays there, on top of the state it
really holds. `malloc_trim(0)` returns those free pages. It costs a few milliseconds, so the
processor calls it after a partition's state is rebuilt and now and then while it runs.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
from collections.abc import Callable


@functools.cache
def _trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    with contextlib.suppress(OSError, AttributeError):
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim  # glibc only
        return trim
    return None


def release_free_memory() -> bool:
    """Return free heap pages to the system; False where the C library cannot (not glibc)."""
    trim = _trim()
    if trim is None:
        return False
    trim(0)
    return True
