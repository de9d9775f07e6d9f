"""Applying an evaluation's decision: promote (one champion CAS) or reject, then idle.

The decision is already in the state (``decision``, ``decided_by``, ``decided_at``)
when this runs; every step here is safe to repeat, so an instance that died halfway
leaves work that its successor (or another instance, after ``takeover_after_s``) can
redo from the top: verify the candidate's blob, switch the champion from the model
the candidate played (or create it), update the model records and the Elo table,
announce the decision, and last return the state to idle.

Fail closed: an accept whose candidate blob does not verify, or whose opponent is no
longer the champion, is turned into a rejection; nothing but a clean accept promotes.
The events go out before the state returns to idle, and the state returns to idle
only once the stream acknowledged them: the decided state is the durable obligation
to announce. A crash or a failed publish leaves it decided, and the next tick (of
this or another instance) finishes again. The announcements carry deterministic ids
(``<game>.<generation>.<candidate>.<phase>``), so the stream keeps one copy of a repeat.
"""

from __future__ import annotations

import logging
import time

import msgspec

from services.training_coordinator import policy
from services.training_coordinator.context import Context
from services.training_coordinator.records import CoordinatorState, EloEntry
from shared.blobs import BlobError
from shared.events import EvaluationCompleted, ModelPromoted, ModelRejected
from shared.failpoints import failpoint
from shared.training import MODEL_FILE, Champion, ModelRecord

log = logging.getLogger("ringmaster.training_coordinator.decision")

replace = msgspec.structs.replace


def tally_of(state: CoordinatorState) -> policy.Tally:
    """The games counted so far."""
    return policy.Tally(state.wins, state.losses, state.draws)


class Decider:
    """Carries out decided evaluations."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def may_finish(self, state: CoordinatorState, now: float) -> bool:
        """A decided state is ours to finish, or its decider has been gone long enough."""
        return bool(state.decision) and (
            state.decided_by == self.ctx.instance
            or now - state.decided_at >= self.ctx.config.takeover_after_s
        )

    async def _overrule(self, state: CoordinatorState, reason: str) -> CoordinatorState | None:
        """Turn an accepted decision into a rejection (it failed before the switch).

        None when the state no longer holds this decision: someone else finished it.
        """

        def reject(s: CoordinatorState) -> CoordinatorState | None:
            if s.phase != "evaluating" or s.candidate != state.candidate or not s.decision:
                return None
            return replace(s, decision="reject", reason=reason)

        self.ctx.counts["accepts_overruled"] += 1
        log.warning("%s: candidate %s not promoted: %s", state.game, state.candidate, reason)
        return await self.ctx.store.update(state.game, reject)

    async def finish(self, state: CoordinatorState) -> None:
        """Apply a decided state's verdict, announce it, and return the game to idle."""
        if state.decision == "accept":
            problem = await self._promote(state)
            if problem:
                overruled = await self._overrule(state, problem)
                if overruled is None:
                    return  # finished elsewhere meanwhile: nothing left to announce here
                state = overruled
        if state.decision == "reject":
            await self._reject(state)
        tally = tally_of(state)
        # The generation too: a later training can reproduce a rejected candidate's bytes.
        ids = f"{state.game}.{state.generation}.{state.candidate}"
        evaluated = await self.ctx.emit(
            EvaluationCompleted(
                game=state.game,
                candidate=state.candidate,
                champion=state.opponent,
                wins=tally.wins,
                losses=tally.losses,
                draws=tally.draws,
                llr=state.llr,
                decision="accept" if state.decision == "accept" else "reject",
                reason=state.reason,
            ),
            msg_id=f"{ids}.evaluated",
        )
        if state.decision == "accept":
            told = await self.ctx.emit(
                ModelPromoted(
                    game=state.game,
                    model_id=state.candidate,
                    generation=state.generation,
                    elo=self._elo(state),
                    previous=state.opponent,
                ),
                msg_id=f"{ids}.promoted",
            )
        else:
            told = await self.ctx.emit(
                ModelRejected(game=state.game, model_id=state.candidate, reason=state.reason),
                msg_id=f"{ids}.rejected",
            )
        if not (evaluated and told):
            # Not idle yet: the decided state is what still owes the announcement.
            self.ctx.counts["announcements_unacked"] += 1
            log.warning("%s: decision on %s not yet announced; kept", state.game, ids)
            return
        await self._to_idle(state)

    def _elo(self, state: CoordinatorState) -> float:
        return policy.promoted_elo(
            state.opponent_elo, tally_of(state).score, self.ctx.config.max_elo_step
        )

    def _evaluation(self, state: CoordinatorState) -> dict[str, float]:
        tally = tally_of(state)
        return {
            "wins": tally.wins,
            "losses": tally.losses,
            "draws": tally.draws,
            "games": tally.games,
            "score": tally.score,
            "llr": state.llr,
        }

    async def _promote(self, state: CoordinatorState) -> str:
        """Switch the champion to the candidate; what went wrong, or "" on success."""
        game, store = state.game, self.ctx.store
        assert state.candidate_ref is not None, "an evaluating state names its candidate"
        current = await store.champion(game)
        if current is None or current.model_id != state.candidate:
            # Checked before the switch only: a switch already made (by a run of this
            # step that died later) is never taken back.
            try:
                await self.ctx.blobs.get_bytes(state.candidate_ref)
            except BlobError as exc:
                return f"candidate blob unusable: {exc}"
        elo = self._elo(state)
        champion = Champion(
            game=game,
            model_id=state.candidate,
            ref=policy.renamed(state.candidate_ref, MODEL_FILE),
            generation=state.generation,
            elo=elo,
            since=state.decided_at,
        )
        if not await store.switch_champion(game, state.opponent, champion):
            return f"the champion is no longer {state.opponent or 'none'}"
        failpoint("training_coordinator.promote.after_cas")

        def crowned(r: ModelRecord) -> ModelRecord | None:
            if r.status == "champion" and r.decided_at == state.decided_at:
                return None
            return replace(
                r,
                status="champion",
                elo=elo,
                decided_at=state.decided_at,
                evaluation=self._evaluation(state),
            )

        await store.change_model(game, state.candidate, crowned)
        if state.opponent:
            await store.change_model(
                game,
                state.opponent,
                lambda r: replace(r, status="archived") if r.status == "champion" else None,
            )
        score = tally_of(state).score
        entry = EloEntry(
            generation=state.generation,
            model_id=state.candidate,
            elo=elo,
            promoted_at=state.decided_at,
            previous=state.opponent,
            games=tally_of(state).games,
            score=score,
        )
        await store.add_elo(game, entry)
        return ""

    async def _reject(self, state: CoordinatorState) -> None:
        def rejected(r: ModelRecord) -> ModelRecord | None:
            if r.status != "candidate":
                return None
            return replace(
                r,
                status="rejected",
                decided_at=state.decided_at,
                evaluation=self._evaluation(state),
            )

        await self.ctx.store.change_model(state.game, state.candidate, rejected)

    async def _to_idle(self, state: CoordinatorState) -> None:
        accepted = state.decision == "accept"
        verb = "promoted" if accepted else "rejected"
        summary = f"{verb} {state.candidate}: {state.reason}"

        def idle(s: CoordinatorState) -> CoordinatorState | None:
            if s.phase != "evaluating" or s.candidate != state.candidate or not s.decision:
                return None
            return replace(
                s,
                phase="idle",
                phase_since=time.time(),
                eval_job="",
                decision="",
                decided_by="",
                last_result=summary,
                promotions=s.promotions + accepted,
                rejections=s.rejections + (not accepted),
            )

        if await self.ctx.store.update(state.game, idle) is not None:
            self.ctx.counts["promotions" if accepted else "rejections"] += 1
            log.info("%s: %s", state.game, summary)
