"""NodeInfo: built from a resource sample, published on ``P.node.<id>``, kept in KV.

The subject carries it every interval (it is the node's liveness for the selector and
the job manager); the ``nodes`` bucket, of which each agent is the only writer of its
own key, gets it when something that matters changed, and every ``refresh`` intervals
anyway, so that a restarted manager can rebuild its view without a write per second
per node.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import nats.errors
from nats.aio.client import Client
from nats.js.kv import KeyValue

from services.node_agent.config import NodeAgentConfig
from services.node_agent.policy import Floors, kv_put_due
from services.node_agent.pools import Pools
from services.node_agent.reports import INCARNATION, AgentStats
from services.node_agent.resources import Sample
from shared.codec import encode
from shared.jobs import GpuInfo, NodeInfo
from shared.subjects import Subjects

#: The bucket is refreshed at least every this many intervals.
KV_REFRESH_INTERVALS = 10

#: What a node reads from its agent: the shared resource sample, the floors' judgement
#: and a reason to take no work ("draining", "paused") or "".
View = Callable[[], tuple[Sample, Floors, str]]


def node_info(
    *,
    node_id: str,
    hostname: str,
    version: str,
    config: NodeAgentConfig,
    sample: Sample,
    floors: Floors,
    gpus: list[GpuInfo] | None = None,
    free: int,
    running: list[str],
    interval_s: float,
    hollow: bool = False,
    reason: str = "",
    utilization: float = 0.0,
) -> NodeInfo:
    """The NodeInfo a node publishes; a ``reason`` (draining, paused) also stops intake.

    ``gpus``: the sample's GPUs with their holders filled in (default: the sample's).
    """
    accepting = floors.accepting and not reason
    return NodeInfo(
        node_id=node_id,
        hostname=hostname,
        version=version,
        capabilities=list(config.capabilities),
        slots=config.capacity,
        free_slots=free if accepting else 0,
        cpu_count=sample.cpu_count,
        load_1m=sample.load_1m,
        memory_total_mb=sample.memory_total_mb,
        memory_available_mb=sample.memory_available_mb,
        disk_free_mb=sample.disk_free_mb,
        gpus=list(sample.gpus if gpus is None else gpus),
        running_jobs=running,
        accepting=accepting,
        reason=reason or floors.reason,
        hollow=hollow,
        sent_at=time.time(),
        interval_s=interval_s,
        utilization=round(utilization, 4),
        incarnation=INCARNATION,
    )


def _shape(info: NodeInfo) -> tuple[Any, ...]:
    """The fields whose change is worth a KV write (load and memory drift constantly)."""
    return (
        info.accepting,
        info.reason,
        info.slots,
        info.free_slots,
        tuple(info.capabilities),
        tuple(info.running_jobs),
        tuple(g.assigned_to for g in info.gpus),
    )


class InfoPublisher:
    """Publishes one node's NodeInfo and keeps its key in the nodes bucket."""

    def __init__(
        self, nc: Client, kv: KeyValue, subjects: Subjects, stats: AgentStats, interval_s: float
    ) -> None:
        self.nc = nc
        self.kv = kv
        self.subjects = subjects
        self.stats = stats
        self.refresh_s = interval_s * KV_REFRESH_INTERVALS
        self.last: NodeInfo | None = None
        self._last_put_at: float | None = None
        self._last_shape: tuple[Any, ...] = ()

    async def publish(self, info: NodeInfo, *, force_kv: bool = False) -> None:
        """Publish ``info``; failures are counted (the next interval sends a fresh one)."""
        self.last = info
        try:
            await self.nc.publish(self.subjects.node(info.node_id), encode(info))
        except (nats.errors.Error, OSError) as exc:
            self.stats.info_publish_errors += 1
            self.stats.last_error = f"publishing NodeInfo: {exc!r}"
        now = time.monotonic()
        shape = _shape(info)
        changed = force_kv or shape != self._last_shape
        if not kv_put_due(
            now=now, last_put_at=self._last_put_at, changed=changed, refresh_s=self.refresh_s
        ):
            return
        try:
            await self.kv.put(info.node_id, encode(info))
        except (nats.errors.Error, OSError) as exc:
            self.stats.info_publish_errors += 1
            self.stats.last_error = f"storing NodeInfo: {exc!r}"
            return
        self._last_put_at, self._last_shape = now, shape


@dataclass(frozen=True)
class NodeParts:
    """What every node, real or hollow, is built from (most of it shared)."""

    hostname: str
    version: str
    config: Callable[[], NodeAgentConfig]
    view: View
    pools: Pools
    publisher: InfoPublisher
    stats: AgentStats
    #: Called when a job leaves the node and when the node has wound down.
    on_change: Callable[[], None]
