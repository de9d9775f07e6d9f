"""The selfplay scheduler: keeps selfplay work queued to the cluster's free selfplay slots.

Each round (``interval_s``) it reads what it needs, computes priorities, shares and
the target with the pure functions of ``policy``, and submits the shortfall:

- slots and free slots: NodeInfo on ``P.node.*`` of alive nodes serving ``selfplay``;
  the target keeps a backlog of queued jobs ahead of every slot;
- queued: the job manager's selfplay jobs PENDING or DISPATCHED (``list``), and the
  RUNNING ones a node's NodeInfo does not show yet (they already took a slot);
- job sizes: JOB_COMPLETED of selfplay jobs (``P.event.job_manager.job.completed``,
  a plain subscription: a missed one only delays learning) teach each game's
  seconds per game, and jobs are sized to run ``target_job_s`` (``sizing.py``);
- games per game from the manifests bucket, champions from the models bucket
  (both read-only, read every round, so a new champion is used at once);
- training, evaluation and promotion signals from a durable consumer on P_EVENTS,
  kept in the scheduler bucket (key ``signals``) so a restart loses none.

It emits SELFPLAY_TARGET_UPDATED when the target changes and SELFPLAY_ALLOCATION_UPDATED
when the split of the target across games changes. API: ``priorities`` and
``override`` (see ``api.py``). Health is DEGRADED while the job manager's breaker is open.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import msgspec
from nats.aio.msg import Msg

from services.selfplay_scheduler.api import OverrideRequest, Overrides, Priorities
from services.selfplay_scheduler.config import SelfplaySchedulerConfig
from services.selfplay_scheduler.jobs import JobManagerClient
from services.selfplay_scheduler.nodes import SelfplayNodes
from services.selfplay_scheduler.records import Records
from services.selfplay_scheduler.rounds import Rounds
from services.selfplay_scheduler.signals import CONSUMED
from services.selfplay_scheduler.sizing import Sizer
from services.selfplay_scheduler.store import Store
from shared.circuit_breaker import BreakerState, CircuitBreaker
from shared.consume import EventConsumer
from shared.contracts import Empty, Event, HealthCheckResult
from shared.events import JobCompleted, decode_data
from shared.jobs import NodeInfo
from shared.liveness import LivenessRule
from shared.loops import Loop
from shared.service import Service

log = logging.getLogger("ringmaster.selfplay_scheduler")

DURABLE = "selfplay_scheduler"


class SelfplaySchedulerService(Service[SelfplaySchedulerConfig]):
    """Sizes the selfplay queue to the free slots and splits it by game priority."""

    name = "selfplay_scheduler"
    description = "keeps selfplay work queued to the free selfplay slots, by game priority"
    config_type = SelfplaySchedulerConfig
    store: Store
    records: Records
    jobs: JobManagerClient
    rounds: Rounds
    consumer: EventConsumer
    round_loop: Loop

    def __init__(
        self,
        config: SelfplaySchedulerConfig,
        *,
        reload_config: Callable[[], SelfplaySchedulerConfig] | None = None,
    ) -> None:
        super().__init__(config, reload_config=reload_config)
        self.nodes = SelfplayNodes(config.capability, LivenessRule(config.lost_after_intervals))
        self.breaker = self.add_breaker(
            CircuitBreaker(
                "job_manager",
                failure_threshold=config.breaker_failures,
                recovery_timeout=config.breaker_recovery_s,
            )
        )
        self.counts: Counter[str] = Counter()
        self.sizer = Sizer(self.counts)

    async def setup(self) -> None:
        """Open the buckets, restore state, then listen to nodes and events; add the API."""
        self.store = Store(await self.bucket("scheduler"), self.config.games)
        await self.store.restore()
        self.records = Records(
            await self.bucket("models"), await self.bucket("manifests"), self.counts
        )
        self.jobs = JobManagerClient(
            self.nc, self.subjects, self.breaker, timeout_s=self.config.request_timeout_s
        )
        self.rounds = Rounds(
            config=self.config,
            nodes=self.nodes,
            records=self.records,
            store=self.store,
            jobs=self.jobs,
            emit=self.emit,
            counts=self.counts,
            sizer=self.sizer,
        )
        await self.subscribe(self.subjects.nodes, NodeInfo, self._on_node_info, kind="node_info")
        completed = self.subjects.event("job_manager", JobCompleted.TYPE)
        await self.subscribe(completed, Event, self._on_job_completed, kind="job_completed")
        self.consumer = EventConsumer(
            self.js,
            stream=self.subjects.events_stream,
            durable=DURABLE,
            filter_subjects=[self.subjects.event("training_coordinator", t.TYPE) for t in CONSUMED],
            handler=self._on_event,
            # One at a time: these events are rare, and nats-py's multi-message fetch can
            # raise a bare TimeoutError that EventConsumer.run does not catch (it would end
            # the consumer and with it the service's task group).
            batch=1,
        )
        await self.tg.start(self.consumer.run)
        await self.add_endpoint("priorities", Empty, self._priorities)
        await self.add_endpoint("override", OverrideRequest, self._override)
        # The first round waits one interval: by then every live node sent its NodeInfo.
        timeout = max(30.0, 4 * self.config.request_timeout_s)
        self.round_loop = self.add_loop(
            Loop(
                "round",
                self.rounds.run,
                interval=self.config.interval_s,
                timeout=timeout,
                run_at_start=False,
            )
        )

    async def on_reload(self, old: SelfplaySchedulerConfig) -> None:
        """Weights, shares, buffer and job settings apply from the next round; the games,
        capability, breaker and consumer settings at restart."""
        self.rounds.config = self.config
        self.round_loop.trigger()

    # -- intake ----------------------------------------------------------------------
    async def _on_node_info(self, info: NodeInfo, _: Msg) -> None:
        self.nodes.observe(info, time.monotonic())

    async def _on_job_completed(self, event: Event, _: Msg) -> None:
        try:
            data = decode_data(event)
        except (msgspec.ValidationError, TypeError):
            self.intake.invalid["job_completed:wrong_schema"] += 1
            return
        if isinstance(data, JobCompleted):
            self.sizer.observe(data)

    async def _on_event(self, event: Event) -> None:
        """Fold a training, evaluation or promotion event into the signals (idempotent)."""
        outcome = await self.store.apply_event(event, time.time())
        self.counts[f"events_{outcome}"] += 1
        if outcome == "applied":
            self.round_loop.trigger()

    # -- API -------------------------------------------------------------------------
    async def _priorities(self, _: Empty) -> Priorities:
        return self.rounds.view

    async def _override(self, request: OverrideRequest) -> Overrides:
        weights = await self.store.set_override(request.game, request.weight)
        log.info("override %s -> %s", request.game, request.weight)
        self.round_loop.trigger()
        return Overrides(weights=weights)

    # -- health ----------------------------------------------------------------------
    def health(self) -> HealthCheckResult:
        """DEGRADED while the job manager does not answer (its breaker is open)."""
        view = self.rounds.view
        details: dict[str, Any] = {
            "target": view.target,
            "queued": view.queued,
            "free_slots": view.free_slots,
            "slots": view.slots,
            "sizing": view.sizing,
            "nodes_alive": view.nodes_alive,
            "priorities": {c: round(p, 4) for c, p in view.priorities.items()},
            "allocation": view.allocation,
            "overrides": view.overrides,
            "in_training": view.in_training,
            "round": self.store.counters.round,
            "consumer": self.consumer.stats(),
            "job_manager": dict(self.jobs.counts),
            "stale_node_infos": self.nodes.stale_dropped,
            "counts": dict(self.counts),
        }
        if self.breaker.state is BreakerState.OPEN:
            return HealthCheckResult.degraded("job manager does not answer", **details)
        return HealthCheckResult.ok(
            f"backlog: target {view.target}, queued {view.queued}, "
            f"free slots {view.free_slots}/{view.slots}",
            **details,
        )

    def custom_metrics(self) -> dict[str, float]:
        """Target, queued and free slots of the last round; jobs submitted."""
        return {
            "target": float(self.rounds.view.target),
            "queued": float(self.rounds.view.queued or 0),
            "free_slots": float(self.rounds.view.free_slots),
            "submitted_total": float(self.counts["submitted"]),
        }
