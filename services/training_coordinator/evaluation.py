"""Evaluation: batches of games against the champion until SPRT (or the cap) decides.

Each batch's counts are added once (the state remembers the job ids it counted) by
the same CAS that takes the verdict, so a redelivered event can neither count twice
nor decide twice; ``decision.py`` then carries the verdict out.

Fail closed: an evaluation that errs (a failed or cancelled job, an unreadable
result) is a rejection, never a promotion.
"""

from __future__ import annotations

import logging
import time

import msgspec

from services.training_coordinator import policy
from services.training_coordinator.context import Context
from services.training_coordinator.decision import Decider, tally_of
from services.training_coordinator.records import CoordinatorState
from shared.events import EvaluationStarted, JobCompleted
from shared.jobs import JobSpec, JobState, Requirements
from shared.training import CANDIDATE_FILE, CHAMPION_FILE

log = logging.getLogger("ringmaster.training_coordinator.evaluation")

replace = msgspec.structs.replace


class Evaluator:
    """Runs a candidate's evaluation batches and applies the decision."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        cfg = ctx.config
        self.params = policy.SprtParams(cfg.elo0, cfg.elo1, cfg.alpha, cfg.beta)
        self.decider = Decider(ctx)

    async def submit_batch(self, state: CoordinatorState) -> None:
        """Submit (or submit again: same key, same job) the state's current batch."""
        cfg, game = self.ctx.config, state.game
        assert state.candidate_ref is not None, "an evaluating state names its candidate"
        games = policy.next_batch_games(
            tally_of(state).games, cfg.eval_batch_games, cfg.max_eval_games
        )
        inputs = [policy.renamed(state.candidate_ref, CANDIDATE_FILE)]
        if state.opponent_ref is not None:
            inputs.append(policy.renamed(state.opponent_ref, CHAMPION_FILE))
        spec = JobSpec(
            type="evaluate",
            args={
                "game": game,
                "games": games,
                "seed": state.generation * 1000 + state.batch,
                # The workload may stop a batch early on its own SPRT: same hypotheses.
                "elo0": cfg.elo0,
                "elo1": cfg.elo1,
                "alpha": cfg.alpha,
                "beta": cfg.beta,
            },
            inputs=inputs,
            requirements=Requirements(capability=cfg.eval_capability, pooled=True),
            priority=cfg.job_priority,
            timeout_s=cfg.eval_timeout_s,
            max_attempts=cfg.job_max_attempts,
            idempotency_key=policy.eval_key(
                game, state.run_id, state.generation, state.candidate, state.batch
            ),
            labels={
                "kind": "evaluate",
                "game": game,
                "candidate": state.candidate,
                "batch": str(state.batch),
                "run": state.run_id,
            },
        )
        record = await self.ctx.peers.submit(spec)

        def recorded(s: CoordinatorState) -> CoordinatorState | None:
            if not self._same_batch(s, state) or s.eval_job:
                return None
            return replace(s, eval_job=record.job_id)

        if await self.ctx.store.update(game, recorded) is not None:
            self.ctx.counts["eval_batches"] += 1
            if state.batch == 1:
                await self.ctx.emit(
                    EvaluationStarted(
                        game=game,
                        candidate=state.candidate,
                        champion=state.opponent,
                        job_id=record.job_id,
                    )
                )
        if record.state in (JobState.FAILED, JobState.CANCELLED):
            await self.fail_closed(state, record.job_id, record.error or record.state.value)

    @staticmethod
    def _same_batch(s: CoordinatorState, state: CoordinatorState) -> bool:
        return (
            s.phase == "evaluating"
            and not s.decision
            and s.candidate == state.candidate
            and s.batch == state.batch
        )

    @staticmethod
    def matches(state: CoordinatorState, job_id: str, labels: dict[str, str]) -> bool:
        """True when an evaluate job's event is about the batch ``state`` waits for."""
        if state.phase != "evaluating" or state.decision or job_id in state.counted:
            return False
        if state.eval_job:
            return job_id == state.eval_job
        return (
            labels.get("run") == state.run_id
            and labels.get("candidate") == state.candidate
            and labels.get("batch") == str(state.batch)
        )

    async def completed(self, state: CoordinatorState, event: JobCompleted) -> None:
        """Count a finished batch; decide, or leave the next batch to be submitted."""
        parsed = policy.parse_tally(event.result)
        if isinstance(parsed, str):
            await self.fail_closed(state, event.job_id, parsed)
            return
        now = time.time()

        def count(s: CoordinatorState) -> CoordinatorState | None:
            if not self.matches(s, event.job_id, event.labels) or s.candidate != state.candidate:
                return None
            tally = tally_of(s) + parsed
            cfg = self.ctx.config
            outcome = policy.decide(tally, self.params, cfg.max_eval_games, cfg.fallback_win_rate)
            counted = replace(
                s,
                counted=[*s.counted, event.job_id],
                wins=tally.wins,
                losses=tally.losses,
                draws=tally.draws,
                llr=outcome.llr,
            )
            if outcome.verdict == "continue":
                return replace(counted, batch=s.batch + 1, eval_job="")
            return replace(
                counted,
                decision=outcome.verdict,
                reason=outcome.reason,
                decided_by=self.ctx.instance,
                decided_at=now,
            )

        new = await self.ctx.store.update(state.game, count)
        if new is None:
            self.ctx.counts["eval_results_ignored"] += 1
            return
        self.ctx.counts["eval_batches_counted"] += 1
        if new.decision:
            await self.decider.finish(new)

    async def fail_closed(self, state: CoordinatorState, job_id: str, error: str) -> None:
        """An evaluation error: the candidate is rejected, never promoted."""
        now = time.time()
        reason = f"evaluation failed (job {job_id or '-'}): {error}"

        def reject(s: CoordinatorState) -> CoordinatorState | None:
            if s.phase != "evaluating" or s.decision or s.candidate != state.candidate:
                return None
            if job_id and s.eval_job not in ("", job_id):
                return None
            return replace(
                s, decision="reject", reason=reason, decided_by=self.ctx.instance, decided_at=now
            )

        new = await self.ctx.store.update(state.game, reject)
        if new is None:
            return
        self.ctx.counts["evaluations_failed"] += 1
        log.warning("%s: candidate %s rejected: %s", state.game, state.candidate, reason)
        await self.decider.finish(new)
