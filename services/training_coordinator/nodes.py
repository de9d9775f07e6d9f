"""Which nodes are alive: the cluster size that scales the training threshold."""

from __future__ import annotations

import time
from collections import Counter

import msgspec
from nats.js.kv import KeyValue

from shared.codec import decode
from shared.jobs import NodeInfo
from shared.snapshot import read_all

#: A node silent this long is forgotten (it no longer counts, whatever its interval).
FORGET_AFTER_S = 3600.0


class AliveNodes:
    """Last time each node's NodeInfo was heard (monotonic clock)."""

    def __init__(self, alive_s: float, counts: Counter[str]) -> None:
        self.alive_s = alive_s
        self.counts = counts
        self._seen: dict[str, float] = {}

    async def seed(self, kv: KeyValue) -> None:
        """Count nodes from the nodes bucket by their ``sent_at``.

        A restarted coordinator then does not see an empty cluster (and a lower
        threshold) for its first seconds.
        """
        now, wall = time.monotonic(), time.time()
        for key, (raw, _) in (await read_all(kv)).items():
            try:
                info = decode(NodeInfo, raw)
            except (msgspec.DecodeError, msgspec.ValidationError):
                self.counts["nodes_invalid"] += 1
                continue
            self._seen[key] = now - max(0.0, wall - info.sent_at)

    def saw(self, node_id: str) -> None:
        """A NodeInfo from ``node_id`` arrived now."""
        self._seen[node_id] = time.monotonic()

    def count(self) -> int:
        """Nodes heard from within ``alive_s``."""
        now = time.monotonic()
        # Nodes gone for good are forgotten, so the map stays the size of the cluster.
        for node_id in [n for n, seen in self._seen.items() if seen < now - FORGET_AFTER_S]:
            del self._seen[node_id]
        return sum(1 for seen in self._seen.values() if seen >= now - self.alive_s)
