"""Readiness and training: idle -> training (one CAS) -> a train job -> a candidate.

The CAS that moves a game to ``training`` comes first; the job is submitted after
it with a key derived from the state, so a crash in between only means the next
tick (of this or another instance) submits the same job again, and the job manager
answers with the one already there.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import msgspec

from services.training_coordinator import policy
from services.training_coordinator.context import Context
from services.training_coordinator.placement import Placement
from services.training_coordinator.records import CoordinatorState
from shared import tracing
from shared.events import JobCompleted, TrainingCompleted, TrainingFailed, TrainingStarted
from shared.jobs import JobSpec, JobState, Requirements
from shared.training import MODEL_FILE, ModelRecord

log = logging.getLogger("ringmaster.training_coordinator.training")

replace = msgspec.structs.replace


class Trainer:
    """Decides when a game trains, submits the job and records its candidate."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        #: The last readiness verdict per game, for health details.
        self.readiness: dict[str, policy.Readiness] = {}
        self.placement = Placement(ctx)

    async def maybe_train(self, state: CoordinatorState) -> None:
        """Start a training run of an idle game if it is ready."""
        cfg, game = self.ctx.config, state.game
        games = await self.placement.games_total(game)
        needed = policy.threshold(
            cfg.threshold_base(game), cfg.games_per_node, self.ctx.alive_nodes()
        )
        now = time.time()
        verdict = policy.readiness(
            phase=state.phase,
            games_total=games,
            games_at_training=state.games_at_training,
            last_training_at=state.last_training_at,
            needed=needed,
            cooldown_s=cfg.cooldown_s,
            now=now,
        )
        self.readiness[game] = verdict
        if not verdict.ready:
            return

        def start(s: CoordinatorState) -> CoordinatorState | None:
            if s.phase != "idle" or s.generation != state.generation:
                return None  # someone else moved first
            return replace(
                s,
                phase="training",
                phase_since=now,
                generation=s.generation + 1,
                training_job="",
                train_node="",
                training_games=games,
                last_training_at=now,
                # Each generation is a trace of its own, from training to the verdict.
                traceparent=tracing.new_trace().traceparent,
            )

        new = await self.ctx.store.update(game, start)
        if new is None:
            return
        self.ctx.counts["trainings_triggered"] += 1
        log.info("%s: training generation %d (%s)", game, new.generation, verdict.reason)
        with tracing.use(new.span):
            await self.submit(new)

    async def submit(self, state: CoordinatorState) -> None:
        """Submit (or submit again: same key, same job) the training of ``state``."""
        cfg, game = self.ctx.config, state.game
        champion = await self.ctx.store.champion(game)
        refs, games = await self.placement.window(game)
        if not refs:
            await self.failed(state, "", "no training data in the window")
            return
        key = policy.train_key(game, state.run_id, state.generation)
        node, on_gpu = await self.placement.pick_node()
        if node is not None:
            blobs = refs + ([champion.ref] if champion else [])
            await self.placement.prefetch(key, game, node, blobs)
        args: dict[str, Any] = {"game": game, "seed": state.generation}
        if cfg.train_epochs:
            args["epochs"] = cfg.train_epochs
        requirement = Requirements(
            capability=cfg.train_capability, node_id=node or "", pooled=node is None, gpu=on_gpu
        )
        spec = JobSpec(
            type="train",
            args=args,
            inputs=policy.train_inputs(refs, champion.ref if champion else None, MODEL_FILE),
            requirements=requirement,
            priority=cfg.job_priority,
            timeout_s=cfg.train_timeout_s,
            max_attempts=cfg.job_max_attempts,
            idempotency_key=key,
            labels=self._labels(state),
        )
        record = await self.ctx.peers.submit(spec)

        def recorded(s: CoordinatorState) -> CoordinatorState | None:
            if s.phase != "training" or s.generation != state.generation or s.training_job:
                return None
            return replace(s, training_job=record.job_id, train_node=node or "")

        if await self.ctx.store.update(game, recorded) is not None:
            parent = champion.model_id if champion else ""
            await self.ctx.emit(
                TrainingStarted(game=game, job_id=record.job_id, games=games, parent=parent)
            )
        if record.state in (JobState.FAILED, JobState.CANCELLED):
            # Its failure event may be long gone by the time this key was submitted again.
            await self.failed(state, record.job_id, record.error or record.state.value)

    @staticmethod
    def _labels(state: CoordinatorState) -> dict[str, str]:
        return {
            "kind": "train",
            "game": state.game,
            "generation": str(state.generation),
            "run": state.run_id,
        }

    @staticmethod
    def matches(state: CoordinatorState, job_id: str, labels: dict[str, str]) -> bool:
        """True when a train job's event is about the training ``state`` waits for."""
        if state.phase != "training":
            return False
        if state.training_job:
            return job_id == state.training_job
        # Submitted but not yet recorded (a crash in between): the labels tell.
        return labels.get("run") == state.run_id and labels.get("generation") == str(
            state.generation
        )

    async def completed(self, state: CoordinatorState, event: JobCompleted) -> None:
        """Record the candidate of a finished training and move on to evaluating it."""
        game = state.game
        ref = next((o for o in event.outputs if o.name == MODEL_FILE), None)
        if ref is None:
            await self.failed(state, event.job_id, f"no {MODEL_FILE} among the outputs")
            return
        champion = await self.ctx.store.champion(game)
        model_id = policy.model_id_for(ref)
        if champion is not None and champion.model_id == model_id:
            await self.failed(state, event.job_id, "training returned the champion unchanged")
            return
        now = time.time()
        existing = await self.ctx.store.model(game, model_id)
        if existing is None or existing.status == "candidate":
            await self.ctx.store.put_model(
                ModelRecord(
                    game=game,
                    model_id=model_id,
                    ref=ref,
                    generation=state.generation,
                    status="candidate",
                    elo=champion.elo if champion else 0.0,
                    parent=champion.model_id if champion else "",
                    created_at=now,
                    training_job=event.job_id,
                )
            )

        def evaluating(s: CoordinatorState) -> CoordinatorState | None:
            if s.phase != "training" or s.generation != state.generation:
                return None
            return replace(
                s,
                phase="evaluating",
                phase_since=now,
                training_job=event.job_id,
                games_at_training=s.training_games,
                candidate=model_id,
                candidate_ref=ref,
                opponent=champion.model_id if champion else "",
                opponent_ref=champion.ref if champion else None,
                opponent_elo=champion.elo if champion else 0.0,
                batch=1,
                eval_job="",
                counted=[],
                wins=0,
                losses=0,
                draws=0,
                llr=0.0,
                decision="",
                reason="",
            )

        if await self.ctx.store.update(game, evaluating) is None:
            return
        self.ctx.counts["trainings_completed"] += 1
        await self.ctx.emit(
            TrainingCompleted(
                game=game,
                job_id=event.job_id,
                model_id=model_id,
                losses=_losses(event.result),
            )
        )

    async def failed(self, state: CoordinatorState, job_id: str, error: str) -> None:
        """The training of ``state`` failed: back to idle, after a cooldown from now."""
        now = time.time()

        def back(s: CoordinatorState) -> CoordinatorState | None:
            if s.phase != "training" or s.generation != state.generation:
                return None
            if job_id and s.training_job not in ("", job_id):
                return None
            return replace(
                s,
                phase="idle",
                phase_since=now,
                last_training_at=now,
                training_failures=s.training_failures + 1,
                last_result=f"training failed: {error}",
            )

        if await self.ctx.store.update(state.game, back) is None:
            return
        self.ctx.counts["trainings_failed"] += 1
        log.warning("%s: training generation %d failed: %s", state.game, state.generation, error)
        await self.ctx.emit(TrainingFailed(game=state.game, job_id=job_id, error=error))


def _losses(result: dict[str, Any]) -> list[float]:
    """The loss curve a train job reported, skipping anything that is not a number."""
    losses = result.get("losses", [])
    if not isinstance(losses, list):
        return []
    return [float(x) for x in losses if isinstance(x, int | float) and not isinstance(x, bool)]
