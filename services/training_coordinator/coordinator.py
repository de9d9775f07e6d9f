"""The per-game cycle, driven by two inputs: a periodic tick and job events.

``advance`` redoes whatever step the state says is pending (a training or an
evaluation batch submitted but not recorded, a decision not yet applied), so a crash
anywhere is repaired by the next tick of this or another instance. ``handle`` routes
the job manager's events (JOB_COMPLETED, JOB_FAILED, JOB_CANCELLED) to the training
or the evaluation they belong to; anything else is ignored and counted.
``reconcile`` reads the record of the job a game waits on and, when it is over,
acts on it exactly as on its event: an event is a wake-up, the record the truth.
Both go through the same state checks and compare-and-sets, so whichever comes
second finds the state moved on and does nothing (counted as stale).
"""

from __future__ import annotations

import logging
import time

import msgspec

from services.training_coordinator.context import Context
from services.training_coordinator.evaluation import Evaluator
from services.training_coordinator.records import CoordinatorState
from services.training_coordinator.training import Trainer
from shared import tracing
from shared.contracts import Event
from shared.errors import RequestError
from shared.events import JobCancelled, JobCompleted, JobFailed, decode_data
from shared.events.jobs import completed_event
from shared.jobs import JobState
from shared.training import Champion

log = logging.getLogger("ringmaster.training_coordinator")


class Coordinator:
    """Training and evaluation of every configured game."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.trainer = Trainer(ctx)
        self.evaluator = Evaluator(ctx)
        #: The latest state and champion seen per game, for health details.
        self.states: dict[str, CoordinatorState] = {}
        self.champions: dict[str, Champion | None] = {}

    async def advance(self, game: str) -> CoordinatorState:
        """Redo the pending step of ``game``'s state, if any; the state seen."""
        state = await self.ctx.store.state(game)
        self.states[game] = state
        with tracing.use(state.span):
            await self._pending_step(state)
        return state

    async def _pending_step(self, state: CoordinatorState) -> None:
        if state.phase == "training" and not state.training_job:
            self.ctx.counts["resumed_training"] += 1
            await self.trainer.submit(state)
        elif state.phase == "evaluating" and state.decision:
            if self.evaluator.decider.may_finish(state, time.time()):
                self.ctx.counts["resumed_decisions"] += 1
                await self.evaluator.decider.finish(state)
        elif state.phase == "evaluating" and not state.eval_job:
            await self.evaluator.submit_batch(state)

    async def tick(self, game: str) -> None:
        """Repair, then start a training run when the game is ready for one."""
        state = await self.advance(game)
        if state.phase == "idle":
            await self.trainer.maybe_train(state)
        await self.refresh(game)

    async def refresh(self, game: str) -> None:
        """Note the game's state and champion for health details."""
        self.states[game] = await self.ctx.store.state(game)
        self.champions[game] = await self.ctx.store.champion(game)

    async def handle(self, event: Event) -> None:
        """Route one job event; raises only for errors worth a redelivery."""
        try:
            data = decode_data(event)
        except msgspec.ValidationError as exc:
            self.ctx.counts["events_invalid"] += 1
            log.warning("%s %s does not decode: %s", event.type, event.id, exc)
            return
        if isinstance(data, JobCompleted):
            await self._completed(data)
        elif isinstance(data, JobFailed):
            if data.permanent:
                await self._ended(data.job_id, data.error)
        elif isinstance(data, JobCancelled):
            await self._ended(data.job_id, f"cancelled: {data.reason or 'no reason given'}")

    async def reconcile(self, game: str) -> None:
        """Act on the end of the job ``game`` waits on, read from its record.

        Raises ``Unavailable`` when the job manager cannot answer (its breaker open).
        """
        state = await self.ctx.store.state(game)
        if state.phase == "training" and state.training_job:
            kind, job_id = "train", state.training_job
        elif state.phase == "evaluating" and state.eval_job and not state.decision:
            kind, job_id = "evaluate", state.eval_job
        else:
            return
        rec = await self.ctx.peers.job(job_id)
        if rec.state is JobState.COMPLETED:
            await self._completed(completed_event(rec))
        elif rec.state is JobState.FAILED:
            await self._ended(job_id, rec.error or "failed")
        elif rec.state is JobState.CANCELLED:
            await self._ended(job_id, f"cancelled: {rec.error or 'no reason given'}")
        else:
            return
        self.ctx.counts[f"reconciled_{kind}"] += 1
        log.info("%s: %s job %s found %s by reconciling", game, kind, job_id, rec.state)

    async def _completed(self, event: JobCompleted) -> None:
        kind, game = event.labels.get("kind"), event.labels.get("game", "")
        if kind not in ("train", "evaluate") or game not in self.ctx.config.games:
            return  # selfplay and other games' jobs: not ours
        state = await self.ctx.store.state(game)
        with tracing.use(state.span):
            if kind == "train" and self.trainer.matches(state, event.job_id, event.labels):
                await self.trainer.completed(state, event)
            elif kind == "evaluate" and self.evaluator.matches(state, event.job_id, event.labels):
                await self.evaluator.completed(state, event)
            else:
                self.ctx.counts[f"{kind}_events_stale"] += 1
                return
        await self._advance_quietly(game)

    async def _ended(self, job_id: str, error: str) -> None:
        # JOB_FAILED and JOB_CANCELLED carry no labels: find the state waiting on the job.
        for game in self.ctx.config.games:
            state = await self.ctx.store.state(game)
            with tracing.use(state.span):
                if state.phase == "training" and state.training_job == job_id:
                    await self.trainer.failed(state, job_id, error)
                elif state.phase == "evaluating" and state.eval_job == job_id:
                    await self.evaluator.fail_closed(state, job_id, error)
                else:
                    continue
            await self._advance_quietly(game)
            return

    async def _advance_quietly(self, game: str) -> None:
        # The event's own effect is recorded; a next step that cannot be taken now
        # (a dependency down) is left to the tick, so the event is not redelivered.
        try:
            await self.advance(game)
            await self.refresh(game)
        except RequestError as exc:
            self.ctx.counts["next_step_deferred"] += 1
            log.info("%s: next step deferred to the tick: %s", game, exc)
