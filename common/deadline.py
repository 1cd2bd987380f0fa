"""A time budget as a value: each awaited step draws from the same monotonic deadline."""

from __future__ import annotations

import time


class Deadline:
    """Starts counting at construction; `remaining()` never goes below zero."""

    __slots__ = ("expires_at",)

    def __init__(self, budget_seconds: float, *, now: float | None = None) -> None:
        started = time.monotonic() if now is None else now
        self.expires_at = started + budget_seconds

    def remaining(self) -> float:
        return max(0.0, self.expires_at - time.monotonic())

    @property
    def expired(self) -> bool:
        return time.monotonic() >= self.expires_at
