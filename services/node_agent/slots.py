"""How busy a node's slots are: utilization over the last minute, idle gaps between jobs.

Both are fed by the node as its job processes start and end (monotonic clock passed
in), and read by NodeInfo (``utilization``), health details and the metrics endpoint.
A gap is the time from one job's process ending to the next one's starting on that
slot, counted only when the next dispatch was already held when the slot freed: a
slot with nothing queued is idle for want of work, not because of the control plane.
"""

from __future__ import annotations

from collections import deque


class Utilization:
    """The share of a node's slots busy over the last ``window_s`` seconds.

    Fed each time the number of busy slots changes (the caller's monotonic clock);
    the share integrates busy slot-seconds over the window, so a slot that idles
    between jobs shows as less than fully busy however short its jobs are.
    """

    def __init__(self, window_s: float, now: float) -> None:
        self.window_s = window_s
        self.born = now
        #: (since, busy slots) change points, oldest first; the last one holds now.
        self.points: list[tuple[float, int]] = [(now, 0)]

    def set(self, busy: int, now: float) -> None:
        """``busy`` slots are in use from ``now`` on."""
        if busy != self.points[-1][1]:
            self.points.append((now, busy))
        horizon = now - self.window_s
        # Keep one point at or before the horizon: it says what held when it began.
        while len(self.points) > 1 and self.points[1][0] <= horizon:
            self.points.pop(0)

    def share(self, capacity: int, now: float) -> float:
        """Busy slot-seconds over slot-seconds in the window (0 with no capacity)."""
        start = max(now - self.window_s, self.born)
        span = now - start
        if capacity <= 0 or span <= 0:
            return 0.0
        total = 0.0
        for i, (since, busy) in enumerate(self.points):
            until = self.points[i + 1][0] if i + 1 < len(self.points) else now
            lo, hi = max(since, start), min(until, now)
            if hi > lo:
                total += busy * (hi - lo)
        return min(1.0, total / (capacity * span))


#: Gaps remembered for the percentiles.
GAP_MEMORY = 1000


class SlotGaps:
    """Idle gaps between a job's end and the next start, while work was queued."""

    def __init__(self) -> None:
        #: When each freed slot freed, and whether the next job was already held then.
        self._freed: deque[tuple[float, bool]] = deque()
        self.gaps: deque[float] = deque(maxlen=GAP_MEMORY)

    def freed(self, now: float, queued: bool) -> None:
        """A job's process ended; ``queued``: the next dispatch is already held."""
        self._freed.append((now, queued))

    def started(self, now: float) -> None:
        """A job's process started, in the slot that freed first (if any did)."""
        if self._freed:
            at, queued = self._freed.popleft()
            if queued:
                self.gaps.append(now - at)

    def percentile(self, q: float) -> float | None:
        """The ``q`` quantile (0..1) of the remembered gaps in seconds, nearest rank."""
        if not self.gaps:
            return None
        ordered = sorted(self.gaps)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    def view(self) -> dict[str, float | int | None]:
        """Gap count and p50 / p99 in milliseconds, for health details and metrics."""
        p50, p99 = self.percentile(0.5), self.percentile(0.99)
        return {
            "count": len(self.gaps),
            "p50_ms": None if p50 is None else round(1000 * p50, 2),
            "p99_ms": None if p99 is None else round(1000 * p99, 2),
        }
