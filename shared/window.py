"""Sliding-window counters, so health reflects the recent past and not a lifetime.

The original system computed health from lifetime counters: one bad hour kept a
service "degraded" for days. A window of one-second buckets forgets on its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import msgspec


class WindowStats(msgspec.Struct, frozen=True):
    """Counts over the last ``window_s`` seconds."""

    window_s: float
    total: int
    errors: int
    error_rate: float
    seconds_since_activity: float | None


class SlidingWindow:
    """Success and error counts over the last ``window_s`` seconds, in 1 s buckets."""

    def __init__(
        self, window_s: float = 60.0, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if window_s < 1:
            raise ValueError("window_s must be at least 1 second")
        self.window_s = window_s
        self._clock = clock
        self._size = int(window_s)
        self._ok = [0] * self._size
        self._err = [0] * self._size
        self._stamp = [-1] * self._size
        self._last_activity: float | None = None

    def _slot(self) -> int:
        second = int(self._clock())
        slot = second % self._size
        if self._stamp[slot] != second:
            self._stamp[slot] = second
            self._ok[slot] = 0
            self._err[slot] = 0
        return slot

    def record(self, ok: bool = True, count: int = 1) -> None:
        """Count ``count`` outcomes now."""
        slot = self._slot()
        if ok:
            self._ok[slot] += count
        else:
            self._err[slot] += count
        self._last_activity = self._clock()

    def stats(self) -> WindowStats:
        """Totals for the buckets still inside the window."""
        now = int(self._clock())
        oldest = now - self._size + 1
        ok = err = 0
        for i in range(self._size):
            if oldest <= self._stamp[i] <= now:
                ok += self._ok[i]
                err += self._err[i]
        total = ok + err
        since = None if self._last_activity is None else self._clock() - self._last_activity
        return WindowStats(
            window_s=self.window_s,
            total=total,
            errors=err,
            error_rate=(err / total) if total else 0.0,
            seconds_since_activity=since,
        )
