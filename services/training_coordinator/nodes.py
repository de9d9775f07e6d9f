"""Which nodes are alive: the cluster size that scales the training threshold."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import msgspec
from nats.js.kv import KeyValue

from shared.codec import decode
from shared.jobs import NodeInfo
from shared.kv import read_all
from shared.liveness import LivenessRule, heard_at

#: A node silent this long is forgotten (it no longer counts, whatever its interval).
FORGET_AFTER_S = 3600.0


class AliveNodes:
    """When each node's NodeInfo was last heard (on ``clock``, monotonic) and its interval."""

    def __init__(
        self,
        rule: LivenessRule,
        counts: Counter[str],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rule = rule
        self.counts = counts
        self.clock = clock
        self._seen: dict[str, tuple[float, float]] = {}

    async def seed(self, kv: KeyValue) -> None:
        """Count nodes from the nodes bucket by the age of their ``sent_at``.

        A restarted coordinator then does not see an empty cluster (and a lower
        threshold) for its first seconds.
        """
        now, wall = self.clock(), time.time()
        for key, (raw, _) in (await read_all(kv)).items():
            try:
                info = decode(NodeInfo, raw)
            except (msgspec.DecodeError, msgspec.ValidationError):
                self.counts["nodes_invalid"] += 1
                continue
            self._seen[key] = (heard_at(now, wall - info.sent_at), info.interval_s)

    def saw(self, info: NodeInfo) -> None:
        """A NodeInfo arrived now."""
        self._seen[info.node_id] = (self.clock(), info.interval_s)

    def count(self) -> int:
        """Nodes not LOST by the rule."""
        now = self.clock()
        # Nodes gone for good are forgotten, so the map stays the size of the cluster.
        for node_id in [n for n, (seen, _) in self._seen.items() if now - seen > FORGET_AFTER_S]:
            del self._seen[node_id]
        return sum(
            1 for seen, interval in self._seen.values() if self.rule.alive(seen, now, interval)
        )
