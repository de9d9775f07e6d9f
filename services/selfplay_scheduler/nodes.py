"""The selfplay nodes the scheduler knows: latest NodeInfo per node and its liveness.

Driven by the caller's clock (monotonic seconds), so its rules are tested without a
bus. A node is alive until its latest NodeInfo is LOST by the shared rule
(``shared.liveness``).
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.jobs import NodeInfo
from shared.liveness import LivenessRule


@dataclass
class _Entry:
    info: NodeInfo
    seen_at: float


class SelfplayNodes:
    """Nodes serving ``capability``, by id."""

    def __init__(self, capability: str, rule: LivenessRule) -> None:
        self.capability = capability
        self.rule = rule
        self.entries: dict[str, _Entry] = {}
        self.stale_dropped = 0

    def observe(self, info: NodeInfo, now: float) -> None:
        """Take a NodeInfo; one older than the one held (handlers may finish out of order)
        is dropped, and a node that stopped serving the capability is forgotten."""
        if self.capability not in info.capabilities:
            self.entries.pop(info.node_id, None)
            return
        current = self.entries.get(info.node_id)
        if current is not None and info.sent_at and info.sent_at < current.info.sent_at:
            self.stale_dropped += 1
            return
        self.entries[info.node_id] = _Entry(info, now)

    def alive(self, now: float) -> list[NodeInfo]:
        """The latest NodeInfo of every alive node, by node id."""
        return [
            e.info
            for _, e in sorted(self.entries.items())
            if self.rule.alive(e.seen_at, now, e.info.interval_s)
        ]

    def forget_silent(self, now: float, after_s: float) -> int:
        """Drop nodes silent for longer than ``after_s``; how many."""
        gone = [n for n, e in self.entries.items() if now - e.seen_at > after_s]
        for node_id in gone:
            del self.entries[node_id]
        return len(gone)
