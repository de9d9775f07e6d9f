"""The node agent service: one per host (or ``--hollow N`` simulated nodes).

It samples the host's resources each interval and judges the safety floors (below one
it takes no work and reports DEGRADED); its node (node.py), or each hollow node
(hollow.py), publishes NodeInfo on ``P.node.<id>``, keeps it in the nodes bucket and
pulls jobs from its node pool and the capability pools it serves while a slot is free.
A job is killed at once when the job manager cancels it. On drain running jobs finish
up to a grace, the rest are handed back; on stop they are killed. No job process
outlives the agent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from pathlib import Path

import anyio
import anyio.to_thread
import msgspec
from nats.aio.msg import Msg
from nats.js.kv import KeyValue

from services.node_agent import policy
from services.node_agent.config import NodeAgentConfig
from services.node_agent.health import agent_health, agent_metrics
from services.node_agent.hollow import HollowNode
from services.node_agent.info import InfoPublisher, NodeParts
from services.node_agent.job import DRAINING, STOPPING
from services.node_agent.kinds import Node
from services.node_agent.node import RealNode
from services.node_agent.pools import Pools
from services.node_agent.reports import AgentStats, Reporter
from services.node_agent.resources import ResourceProbe, Sample
from services.node_agent.runner import JobRunner
from services.node_agent.sweep import sweep_orphans
from services.node_agent.workspace import node_blobs
from shared.blobs import ensure_store
from shared.contracts import Event, HealthCheckResult
from shared.events import JobCancelled, decode_data
from shared.loops import Loop
from shared.provision import ensure_stream, jobs_stream_config
from shared.service import Service

log = logging.getLogger("ringmaster.node_agent")

#: Config fields that only a restart applies (they shape consumers and directories).
RESTART_FIELDS = ("node_id", "capabilities", "work_dir", "cache_dir", "hollow", "ack_wait_s")


class NodeAgentService(Service[NodeAgentConfig]):
    """Publishes its node's resources, pulls jobs and runs them as process groups."""

    name = "node_agent"
    description = "runs jobs on a host: resources, job pools, processes, progress, outputs"
    config_type = NodeAgentConfig

    def __init__(
        self,
        config: NodeAgentConfig,
        *,
        reload_config: Callable[[], NodeAgentConfig] | None = None,
    ) -> None:
        super().__init__(config, reload_config=reload_config)
        self.node_id = config.node_id
        self.stats = AgentStats()
        self.real: RealNode | None = None
        self.hollow_nodes: list[HollowNode] = []
        self.sample = Sample(0, 0.0, 0, 0, 0)
        self.floors = policy.Floors(accepting=False, reason="resources not sampled yet")
        self._judged: policy.Floors | None = None
        self.probe: ResourceProbe | None = None
        self._changed = anyio.Event()
        self._info_loop: Loop | None = None

    @property
    def nodes(self) -> list[Node]:
        """Every node this agent runs (the real one, or the hollow ones), as ``Node``s."""
        return [self.real] if self.real is not None else list(self.hollow_nodes)

    # -- setup -------------------------------------------------------------------------
    async def setup(self) -> None:
        """Provision what the agent uses, sample resources, then start the node(s)."""
        cfg = self.config
        await ensure_stream(self.js, jobs_stream_config(self.subjects, cfg))
        kv = await self.bucket("nodes")
        store = await ensure_store(self.js, self.subjects.data_store, replicas=cfg.replicas)
        reporter = Reporter(self.nc, self.subjects.node_report, cfg.report_timeout_s, self.stats)
        probe = partial(ResourceProbe, cfg, detect_gpus=not cfg.hollow)
        self.probe = await anyio.to_thread.run_sync(probe)
        await self.take_sample()
        cancelled = self.subjects.event("job_manager", JobCancelled.TYPE)
        await self.subscribe(cancelled, Event, self._on_cancelled, kind="job_cancelled")
        loop = Loop(
            "node_info",
            self._info_round,
            interval=cfg.beacon_interval,
            timeout=60.0,
            max_backoff=max(30.0, cfg.beacon_interval),
        )
        self._info_loop = self.add_loop(loop)
        if cfg.hollow:
            for i in range(cfg.hollow):
                node_id = f"{self.node_id}-h{i}"
                self.hollow_nodes.append(HollowNode(node_id, self._parts(node_id, kv), reporter))
            log.info("running %d hollow nodes %s-h*", cfg.hollow, self.node_id)
        else:
            swept = await anyio.to_thread.run_sync(sweep_orphans, Path(cfg.work_dir))
            self.stats.orphans_killed += len(swept)
            maker = partial(node_blobs, self.nc, store, cfg, self.subjects)
            blobs = await anyio.to_thread.run_sync(maker)  # it creates the cache directory
            runner = JobRunner(
                node_id=self.node_id,
                config=lambda: self.config,
                reporter=reporter,
                blobs=blobs,
                stats=self.stats,
                emit=self.emit_nowait,
            )
            self.real = RealNode(self.node_id, self._parts(self.node_id, kv), runner, self.spawn)
        for node in self.nodes:
            self.spawn(node.run)

    def _parts(self, node_id: str, kv: KeyValue) -> NodeParts:
        """What a node, real or hollow, is built from."""
        cfg = self.config
        assert self.probe is not None
        pools = Pools(
            self.js,
            self.subjects,
            node_id,
            list(cfg.capabilities),
            ack_wait_s=cfg.ack_wait_s,
            max_deliver=cfg.max_deliver,
            stats=self.stats,
            spawn=self.spawn,
            pull_s=cfg.fetch_timeout_s,
        )
        return NodeParts(
            hostname=self.probe.hostname,
            version=self.version,
            config=lambda: self.config,
            view=lambda: (self.sample, self.floors, self.not_taking()),
            pools=pools,
            publisher=InfoPublisher(self.nc, kv, self.subjects, self.stats, cfg.beacon_interval),
            stats=self.stats,
            on_change=self._notify,
        )

    # -- resources and NodeInfo ----------------------------------------------------------
    async def take_sample(self) -> None:
        """Read the host's resources (in a worker thread) and judge the floors."""
        assert self.probe is not None
        self.sample = await anyio.to_thread.run_sync(self.probe.sample)
        cfg, was = self.config, self._judged
        self.floors = self._judged = policy.judge_floors(
            disk_free_mb=self.sample.disk_free_mb,
            memory_available_mb=self.sample.memory_available_mb,
            min_free_disk_mb=cfg.min_free_disk_mb,
            min_memory_mb=cfg.min_memory_mb,
        )
        if was is not None and self.floors.accepting != was.accepting:
            self.wake_beacon()  # the status changed: say so now, not in a second
        if self.floors.accepting and was is not None and not was.accepting:
            log.warning("floors: back above every floor; taking work again")
        elif not self.floors.accepting and (was is None or was.accepting):
            log.warning("floors: taking no work: %s", self.floors.reason)

    def not_taking(self) -> str:
        """Why the agent takes no work now, floors aside ("" when it takes work)."""
        if self.draining:
            return "draining"
        return "paused" if self.paused else ""

    async def _info_round(self) -> None:
        await self.take_sample()
        # Hollow nodes publish from their own task; the real node's NodeInfo goes here.
        if self.real is not None and not self.real.finished.is_set():
            await self.real.publisher.publish(self.real.info())

    async def _on_cancelled(self, event: Event, _: Msg) -> None:
        try:
            data = decode_data(event)
        except msgspec.ValidationError:
            self.intake.invalid["job_cancelled:wrong_schema"] += 1
            return
        if isinstance(data, JobCancelled):
            for node in self.nodes:
                node.cancel(data.job_id)

    # -- drain and stop ------------------------------------------------------------------
    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def _wait_until(self, done: Callable[[], bool], timeout: float) -> bool:
        with anyio.move_on_after(timeout):
            while not done():
                await self._changed.wait()
        return done()

    async def on_drain(self) -> None:
        """Take no more work; let jobs finish up to the grace, then hand them back."""
        for node in self.nodes:
            node.intake_open = False
        idle = await self._wait_until(
            lambda: not any(n.running for n in self.nodes), self.config.drain_grace_s
        )
        if not idle:
            log.warning("drain: grace over, handing back the jobs still running")
        for node in self.nodes:
            node.stop(DRAINING)
        await self._wait_until(self._all_finished, self.config.shutdown_timeout)

    def _all_finished(self) -> bool:
        return all(node.finished.is_set() for node in self.nodes)

    async def teardown(self) -> None:
        """Kill what still runs (reported failed), stop pulling, say the node stopped."""
        if self._info_loop is not None:
            self._info_loop.pause()
        for node in self.nodes:
            node.stop(STOPPING)
        # The nodes bound their own wind-down by shutdown_timeout; a little slack here.
        if not await self._wait_until(self._all_finished, self.config.shutdown_timeout + 2.0):
            log.error("stop: some nodes did not wind down in time")

    async def on_reload(self, old: NodeAgentConfig) -> None:
        """Commands, timeouts, floors and intervals apply at once; the rest at restart."""
        for name in RESTART_FIELDS:
            if getattr(self.config, name) != getattr(old, name):
                log.warning("reload: %s changes only at restart; keeping the old value", name)
                setattr(self.config, name, getattr(old, name))

    # -- health --------------------------------------------------------------------------
    def health(self) -> HealthCheckResult:
        """DEGRADED below a safety floor; details show jobs, floors and counters."""
        return agent_health(self)

    def custom_metrics(self) -> dict[str, float]:
        """Job counters and the jobs running."""
        return agent_metrics(self)
