"""One round of the selfplay scheduler: read, compute, announce, submit.

A round reads the live selfplay nodes, the records (games, champions) and the job
manager's queue, computes priorities, shares and the target with the pure functions
of ``policy``, announces a changed target or split, and submits the shortfall. When
the job manager does not answer, nothing is submitted: without knowing what is
queued, any submission could overfill.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable

import nats.errors

from services.selfplay_scheduler import policy
from services.selfplay_scheduler.api import Priorities
from services.selfplay_scheduler.config import SelfplaySchedulerConfig
from services.selfplay_scheduler.jobs import CallError, JobManagerClient, QueueView
from services.selfplay_scheduler.nodes import SelfplayNodes
from services.selfplay_scheduler.records import Records
from services.selfplay_scheduler.sizing import Sizer
from services.selfplay_scheduler.store import Store
from shared.events import EventData, SelfplayAllocationUpdated, SelfplayTargetUpdated

log = logging.getLogger("ringmaster.selfplay_scheduler.rounds")

#: Nodes silent this long are dropped from the view.
FORGET_NODES_AFTER_S = 3600.0


class Rounds:
    """The scheduler's round and what it keeps between rounds (view, credits)."""

    def __init__(
        self,
        *,
        config: SelfplaySchedulerConfig,
        nodes: SelfplayNodes,
        records: Records,
        store: Store,
        jobs: JobManagerClient,
        emit: Callable[[EventData], Awaitable[bool]],
        counts: Counter[str],
        sizer: Sizer,
    ) -> None:
        self.config = config
        self.nodes = nodes
        self.records = records
        self.store = store
        self.jobs = jobs
        self.emit = emit
        self.counts = counts
        self.sizer = sizer
        #: The last round's view (what the ``priorities`` endpoint answers).
        self.view = Priorities()
        #: Credit each game carries between rounds (see policy.allocate).
        self.credits: dict[str, float] = {}
        #: Logs the first failed submit of a streak only; counts tell the rest.
        self._submit_failing = False

    async def _queue(self) -> QueueView | None:
        try:
            return await self.jobs.queue_view()
        except CallError as exc:
            self.counts["list_failed"] += 1
            log.debug("job manager list failed: %r", exc)
            return None

    async def run(self) -> None:
        """One round: read, compute, announce changes, submit the shortfall."""
        cfg, now, mono = self.config, time.time(), time.monotonic()
        self.nodes.forget_silent(mono, FORGET_NODES_AFTER_S)
        await self.records.refresh(cfg.games)
        inputs = self.records.all_inputs(
            cfg.games, self.store.signals, self.store.overrides, now, cfg.training_stale_s
        )
        prios = policy.priorities(inputs, cfg.weights, cfg.elo_target)
        shares = policy.shares(prios, cfg.min_share)
        nodes = self.nodes.alive(mono)
        queue = await self._queue()
        free = policy.free_slots(nodes, queue.running if queue else {})
        slots = policy.total_slots(nodes)
        target = policy.target(free, cfg.queue_buffer, len(nodes), slots, cfg.backlog_per_slot)
        allocation, _ = policy.allocate(target, shares)
        self.view = Priorities(
            priorities=prios,
            terms={c: policy.terms(i, cfg.weights, cfg.elo_target) for c, i in inputs.items()},
            shares=shares,
            allocation=allocation,
            target=target,
            queued=queue.queued if queue else None,
            queued_by_game=queue.queued_by_game if queue else {},
            free_slots=free,
            slots=slots,
            nodes_alive=len(nodes),
            overrides=dict(self.store.overrides),
            in_training=sorted(c for c, i in inputs.items() if i.in_training),
            plateau={c: i.plateau for c, i in inputs.items()},
            sizing=self.sizer.view(cfg),
            updated_at=now,
        )
        await self._announce(self.view)
        if queue is not None:
            await self._submit(policy.to_submit(target, queue.queued, cfg.max_submit_per_round))

    async def _announce(self, view: Priorities) -> None:
        last = self.store.last_allocation
        target_changed = last is None or view.target != last.target
        split_changed = last is None or view.allocation != last.allocation
        if target_changed:
            await self.emit(SelfplayTargetUpdated(target=view.target, free_slots=view.free_slots))
        if split_changed:
            rounded = {c: round(p, 4) for c, p in view.priorities.items()}
            await self.emit(
                SelfplayAllocationUpdated(priorities=rounded, allocation=view.allocation)
            )
        if (target_changed or split_changed) and not await self.store.record_allocation(view):
            self.counts["allocation_put_failed"] += 1

    async def _submit(self, n: int) -> None:
        if n <= 0:
            return
        try:
            round_no, first_seed = await self.store.reserve(n)
        except (nats.errors.Error, TimeoutError) as exc:
            self.counts["counters_put_failed"] += 1
            log.warning("cannot reserve a submit round: %r", exc)
            return
        split, self.credits = policy.allocate(n, self.view.shares, self.credits)
        for i, game in enumerate(policy.interleave(split)):
            games = self.sizer.games(game, self.config)
            spec = self.records.spec(game, self.config, round_no, i, first_seed + i, games)
            try:
                await self.jobs.submit(spec)
            except CallError as exc:
                # The rest waits for the next round, which sees what did get queued.
                self.counts["submit_failed"] += 1
                level = logging.DEBUG if self._submit_failing else logging.WARNING
                log.log(level, "submitting %s failed: %r", spec.idempotency_key, exc)
                self._submit_failing = True
                return
            self._submit_failing = False
            self.counts["submitted"] += 1
            self.counts[f"submitted.{game}"] += 1
