"""The node selector service: ranks live, healthy nodes for a job's requirement.

It keeps a live view of the nodes from their NodeInfo on ``P.node.*`` (read from the
nodes bucket at start, so a restarted selector knows the nodes at once) and an
unhealthy overlay fed by JOB_FAILED events that name a node (NODE_UNHEALTHY, later
NODE_RECOVERED). API: ``select`` (SelectRequest -> SelectReply, best first) and
``nodes`` (NodeList). Health: ERROR with no node alive; DEGRADED while GPU work waits
(a GPU select within the health window found nothing) and no GPU node is alive.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Callable

import msgspec
from nats.aio.msg import Msg

from services.node_selector.config import NodeSelectorConfig
from services.node_selector.policy import Candidate, merged_power_table, node_gpu_power, rank
from services.node_selector.view import LiveView, UnhealthyOverlay
from shared.codec import decode
from shared.contracts import Empty, Event, HealthCheckResult
from shared.events import JobFailed, NodeRecovered, NodeUnhealthy, decode_data
from shared.jobs import REFUSED, NodeInfo, NodeList, NodeView, SelectReply, SelectRequest
from shared.kv import read_all
from shared.liveness import LivenessRule
from shared.loops import Loop
from shared.service import Service

log = logging.getLogger("ringmaster.node_selector")

#: Event ids remembered to ignore a redelivered event (the outbox may publish twice).
SEEN_EVENTS = 10_000


class NodeSelectorService(Service[NodeSelectorConfig]):
    """Live node view, unhealthy overlay and ranking behind ``select``."""

    name = "node_selector"
    description = "live view of nodes; ranks nodes for a requirement"
    config_type = NodeSelectorConfig

    def __init__(
        self,
        config: NodeSelectorConfig,
        *,
        reload_config: Callable[[], NodeSelectorConfig] | None = None,
    ) -> None:
        super().__init__(config, reload_config=reload_config)
        self.view = LiveView(LivenessRule(config.lost_after_intervals, config.lost_after_s))
        self.overlay = UnhealthyOverlay(
            failures=config.unhealthy_failures,
            window_s=config.unhealthy_window_s,
            cooldown_s=config.unhealthy_cooldown_s,
        )
        self.power_table = merged_power_table(config.gpu_power)
        self.counts: Counter[str] = Counter()
        self.last_gpu_miss: float | None = None
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._alive: set[str] = set()
        self._picks: dict[str, int] = {}
        self._gpu_picks: dict[str, int] = {}

    async def setup(self) -> None:
        """Read the nodes bucket, subscribe to NodeInfo and failures, add the API."""
        await self._restore(await read_all(await self.bucket("nodes")))
        await self.subscribe(self.subjects.nodes, NodeInfo, self._on_node_info, kind="node_info")
        await self.subscribe(self.subjects.failed_events, Event, self._on_failure, kind="failed")
        await self.add_endpoint("select", SelectRequest, self._select)
        await self.add_endpoint("nodes", Empty, self._nodes)
        self.add_loop(Loop("sweep", self._sweep, interval=self.config.sweep_interval_s))

    async def _restore(self, entries: dict[str, tuple[bytes, int]]) -> None:
        now, wall = time.monotonic(), time.time()
        for key, (raw, _) in entries.items():
            try:
                info = decode(NodeInfo, raw)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                self.counts["bucket_invalid"] += 1
                log.warning("nodes bucket: %s does not decode: %s", key, exc)
                continue
            # Its age is what its sent_at says: a node that went silent long ago is known
            # but not alive until it publishes again.
            self.view.observe(info, now, age_s=wall - info.sent_at if info.sent_at else 1e9)
        self._alive = self.view.alive_ids(now)
        log.info("restored %d nodes (%d alive) from the bucket", len(entries), len(self._alive))

    # -- intake ----------------------------------------------------------------------
    async def _on_node_info(self, info: NodeInfo, _: Msg) -> None:
        now = time.monotonic()
        self._picks.pop(info.node_id, None)  # its free slots (and GPUs) are fresh again
        self._gpu_picks.pop(info.node_id, None)
        if self.view.observe(info, now):
            self._alive.add(info.node_id)
            log.info("node %s alive", info.node_id)

    async def _on_failure(self, event: Event, _: Msg) -> None:
        if event.type != JobFailed.TYPE:
            return  # other failures do not name a node that ran a job
        if event.id in self._seen:
            self.counts["failure_duplicates"] += 1
            return
        self._seen[event.id] = None
        if len(self._seen) > SEEN_EVENTS:
            self._seen.popitem(last=False)
        try:
            data = decode_data(event)
        except msgspec.ValidationError as exc:
            self.counts["failure_invalid"] += 1
            log.warning("JOB_FAILED %s does not decode: %s", event.id, exc)
            return
        if not isinstance(data, JobFailed) or not data.node_id:
            return
        if data.error.startswith(REFUSED):
            # The job asked for more than the node has: the job's fault, not the node's.
            self.counts["refusals_ignored"] += 1
            return
        self.counts["failures_counted"] += 1
        until = self.overlay.record_failure(data.node_id, time.monotonic())
        if until is not None:
            reason = (
                f"{self.config.unhealthy_failures} failed jobs within "
                f"{self.config.unhealthy_window_s:.0f}s; last: {data.error}"
            )
            log.warning("node %s unhealthy: %s", data.node_id, reason)
            wall_until = time.time() + (until - time.monotonic())
            await self.emit(NodeUnhealthy(node_id=data.node_id, reason=reason, until=wall_until))

    async def _sweep(self) -> None:
        now = time.monotonic()
        for node_id in self.overlay.sweep(now):
            log.info("node %s recovered", node_id)
            await self.emit(NodeRecovered(node_id=node_id))
        alive = self.view.alive_ids(now)
        for node_id in sorted(self._alive - alive):
            log.warning("node %s lost: no NodeInfo for %.1fs", node_id, self.view.age(node_id, now))
        self._alive = alive
        for node_id in self.view.forget(now, self.config.forget_after_s):
            log.info("node %s forgotten", node_id)

    # -- API -------------------------------------------------------------------------
    def _candidates(self, now: float) -> list[Candidate]:
        return [
            Candidate(
                info=entry.info,
                alive=self.view.is_alive(node_id, now),
                unhealthy=self.overlay.is_unhealthy(node_id),
                pending=self._picks.get(node_id, 0),
                pending_gpus=self._gpu_picks.get(node_id, 0),
            )
            for node_id, entry in self.view.entries.items()
        ]

    async def _select(self, request: SelectRequest) -> SelectReply:
        now = time.monotonic()
        nodes = rank(
            self._candidates(now), request, self.power_table, self.config.default_gpu_power
        )
        self.counts["selects"] += 1
        need = request.requirement.gpu_count
        if nodes:
            self._picks[nodes[0]] = self._picks.get(nodes[0], 0) + 1
            self._gpu_picks[nodes[0]] = self._gpu_picks.get(nodes[0], 0) + need
        else:
            self.counts["selects_empty"] += 1
            if need and not request.preference:
                self.last_gpu_miss = now
        return SelectReply(nodes=nodes)

    async def _nodes(self, _: Empty) -> NodeList:
        now = time.monotonic()
        views = [self._node_view(node_id, now) for node_id in sorted(self.view.entries)]
        return NodeList(
            nodes=views,
            alive=sum(v.alive for v in views),
            unhealthy=sum(v.unhealthy for v in views),
        )

    def _node_view(self, node_id: str, now: float) -> NodeView:
        info = self.view.entries[node_id].info
        until = self.overlay.until(node_id)
        return NodeView(
            info=info,
            alive=self.view.is_alive(node_id, now),
            age_s=self.view.age(node_id, now) or 0.0,
            unhealthy=until is not None,
            unhealthy_until=None if until is None else time.time() + (until - now),
            recent_failures=self.overlay.recent_failures(node_id, now),
            gpu_power=node_gpu_power(info, self.power_table, self.config.default_gpu_power),
        )

    # -- health ----------------------------------------------------------------------
    def _gpu_alive(self, now: float) -> int:
        return sum(
            1
            for node_id, entry in self.view.entries.items()
            if entry.info.gpus and self.view.is_alive(node_id, now)
        )

    def health(self) -> HealthCheckResult:
        """ERROR with no node alive; DEGRADED when GPU work finds no live GPU node."""
        now = time.monotonic()
        alive = len(self.view.alive_ids(now))
        gpu_alive = self._gpu_alive(now)
        details = {
            "nodes_known": len(self.view.entries),
            "nodes_alive": alive,
            "gpu_nodes_alive": gpu_alive,
            "unhealthy": self.overlay.unhealthy,
            "stale_node_infos": self.view.stale_dropped,
            "counts": dict(self.counts),
        }
        if alive == 0:
            return HealthCheckResult.error(
                f"no node alive ({len(self.view.entries)} known)", **details
            )
        miss = self.last_gpu_miss
        if miss is not None and now - miss <= self.config.health_window_s and gpu_alive == 0:
            return HealthCheckResult.degraded("GPU work waits: no GPU node alive", **details)
        return HealthCheckResult.ok(f"{alive} nodes alive", **details)

    def custom_metrics(self) -> dict[str, float]:
        """Nodes alive, unhealthy and alive with GPUs; selections made and empty."""
        now = time.monotonic()
        return {
            "nodes_alive": float(len(self.view.alive_ids(now))),
            "nodes_unhealthy": float(len(self.overlay.unhealthy)),
            "gpu_nodes": float(self._gpu_alive(now)),
            "selects_total": float(self.counts["selects"]),
            "selects_empty_total": float(self.counts["selects_empty"]),
        }
