"""The node selector's state: the live view of nodes and the unhealthy overlay.

Both are plain objects driven by the caller's clock (``now``, monotonic seconds), so
their rules are tested without a bus or a sleep.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from shared.jobs import NodeInfo
from shared.liveness import LivenessRule, heard_at


@dataclass
class NodeEntry:
    """A node's latest NodeInfo and when it arrived."""

    info: NodeInfo
    seen_at: float


class LiveView:
    """Nodes by id with liveness by ``rule``: alive until its latest NodeInfo is LOST."""

    def __init__(self, rule: LivenessRule) -> None:
        self.rule = rule
        self.entries: dict[str, NodeEntry] = {}
        self.stale_dropped = 0

    def observe(self, info: NodeInfo, now: float, age_s: float = 0.0) -> bool:
        """Take a NodeInfo that is ``age_s`` old; True when the node was not alive before.

        An info older (by ``sent_at``) than the one held is dropped and counted: the
        handlers of one subscription may finish out of order.
        """
        current = self.entries.get(info.node_id)
        if current is not None and info.sent_at and info.sent_at < current.info.sent_at:
            self.stale_dropped += 1
            return False
        was_alive = self.is_alive(info.node_id, now)
        self.entries[info.node_id] = NodeEntry(info=info, seen_at=heard_at(now, age_s))
        return not was_alive and self.is_alive(info.node_id, now)

    def age(self, node_id: str, now: float) -> float | None:
        """Seconds since the node's latest NodeInfo; None for an unknown node."""
        entry = self.entries.get(node_id)
        return None if entry is None else now - entry.seen_at

    def is_alive(self, node_id: str, now: float) -> bool:
        """Whether the node is known and not LOST."""
        entry = self.entries.get(node_id)
        return entry is not None and self.rule.alive(entry.seen_at, now, entry.info.interval_s)

    def alive_ids(self, now: float) -> set[str]:
        """Every alive node."""
        return {node_id for node_id in self.entries if self.is_alive(node_id, now)}

    def forget(self, now: float, after_s: float) -> list[str]:
        """Drop nodes silent for longer than ``after_s``; their ids."""
        gone = [n for n, e in self.entries.items() if now - e.seen_at > after_s]
        for node_id in gone:
            del self.entries[node_id]
        return gone


class UnhealthyOverlay:
    """Nodes that failed jobs too often lately, kept out of selection for a cooldown.

    ``failures`` JOB_FAILED naming a node within ``window_s`` make it unhealthy until
    ``cooldown_s`` later. Failures while unhealthy do not extend the cooldown; once it
    ends the node starts from a clean slate.
    """

    def __init__(self, *, failures: int, window_s: float, cooldown_s: float) -> None:
        self.failures = failures
        self.window_s = window_s
        self.cooldown_s = cooldown_s
        self._recent: dict[str, deque[float]] = {}
        self._until: dict[str, float] = {}

    def _prune(self, node_id: str, now: float) -> deque[float]:
        times = self._recent.setdefault(node_id, deque())
        while times and now - times[0] > self.window_s:
            times.popleft()
        return times

    def record_failure(self, node_id: str, now: float) -> float | None:
        """Count one failure; the cooldown's end when it made the node unhealthy."""
        if node_id in self._until:
            return None
        times = self._prune(node_id, now)
        times.append(now)
        if len(times) < self.failures:
            return None
        del self._recent[node_id]
        until = self._until[node_id] = now + self.cooldown_s
        return until

    def recent_failures(self, node_id: str, now: float) -> int:
        """Failures of the node within the window (0 while unhealthy)."""
        if node_id not in self._recent:
            return 0
        times = self._prune(node_id, now)
        if not times:
            del self._recent[node_id]
        return len(times)

    def until(self, node_id: str) -> float | None:
        """When the node's cooldown ends; None when it is not unhealthy."""
        return self._until.get(node_id)

    def is_unhealthy(self, node_id: str) -> bool:
        """Whether the node is in the overlay (until the next sweep recovers it)."""
        return node_id in self._until

    @property
    def unhealthy(self) -> list[str]:
        """Every node in the overlay."""
        return sorted(self._until)

    def sweep(self, now: float) -> list[str]:
        """Recover the nodes whose cooldown ended, and drop stale failure counts."""
        recovered = sorted(n for n, until in self._until.items() if until <= now)
        for node_id in recovered:
            del self._until[node_id]
        for node_id in list(self._recent):
            self.recent_failures(node_id, now)
        return recovered
