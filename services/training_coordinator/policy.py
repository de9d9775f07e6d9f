"""The training coordinator's pure decisions: readiness, SPRT, fallback, Elo, job inputs.

The SPRT itself (tally, hypotheses, LLR, verdict) is ``shared.sprt``, the one test the
workload's early stop of an evaluation match uses too; this module adds the gate's
rule at the game cap (``decide``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from shared.jobs import DataRef
from shared.sprt import VAR_FLOOR, SprtParams, Tally, Verdict, elo_to_score, llr, sprt

__all__ = [
    "VAR_FLOOR",
    "SprtParams",
    "Tally",
    "Verdict",
    "elo_to_score",
    "llr",
    "sprt",
]


@dataclass(frozen=True)
class Readiness:
    """Whether a game should train now, and why (or why not)."""

    ready: bool
    reason: str
    new_games: int
    threshold: int


def threshold(min_new_games: int, games_per_node: int, alive_nodes: int) -> int:
    """New games needed before training: the game's floor, or more on a big cluster."""
    return max(min_new_games, games_per_node * max(0, alive_nodes))


def readiness(
    *,
    phase: str,
    games_total: int,
    games_at_training: int,
    last_training_at: float,
    needed: int,
    cooldown_s: float,
    now: float,
) -> Readiness:
    """Ready when nothing is in flight, the cooldown passed and enough new games exist."""
    new_games = max(0, games_total - games_at_training)
    if phase != "idle":
        return Readiness(False, f"{phase} in flight", new_games, needed)
    if now - last_training_at < cooldown_s:
        return Readiness(False, "cooldown", new_games, needed)
    if new_games < needed:
        return Readiness(False, f"{new_games}/{needed} new games", new_games, needed)
    return Readiness(True, "ready", new_games, needed)


# -- SPRT ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What an evaluation's tally says: a verdict, its LLR, and why."""

    verdict: Verdict
    llr: float
    reason: str


def decide(tally: Tally, params: SprtParams, max_games: int, fallback_win_rate: float) -> Outcome:
    """SPRT first; at the game cap without a verdict, accept iff the score reaches the rate."""
    verdict, value = sprt(tally, params)
    if verdict != "continue":
        bound = params.upper if verdict == "accept" else params.lower
        return Outcome(verdict, value, f"SPRT: LLR {value:.3f} crossed {bound:.3f}")
    if tally.games < max_games:
        return Outcome("continue", value, "")
    passed = tally.score >= fallback_win_rate
    rule = f"score {tally.score:.3f} {'>=' if passed else '<'} {fallback_win_rate:.3f}"
    return Outcome(
        "accept" if passed else "reject", value, f"cap of {max_games} games reached; {rule}"
    )


#: The fewest games a batch asks for: evaluations play colour-swapped pairs.
MIN_BATCH_GAMES = 2


def next_batch_games(played: int, batch_games: int, max_games: int) -> int:
    """Games of the next batch: a full batch, or what is left under the cap (at least 2)."""
    return max(MIN_BATCH_GAMES, min(batch_games, max_games - played))


def parse_tally(result: dict[str, Any]) -> Tally | str:
    """An evaluate job's result as a Tally, or why it cannot be trusted."""
    values = []
    for name in ("wins", "losses", "draws"):
        value = result.get(name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            return f"result field {name!r} is {value!r}, not a count"
        values.append(value)
    tally = Tally(*values)
    if tally.games == 0:
        return "the evaluation played no games"
    return tally


# -- Elo -----------------------------------------------------------------------------


def elo_from_score(score: float, max_step: float) -> float:
    """The Elo difference a score implies, clamped to ``±max_step``."""
    if score <= 0:
        return -max_step
    if score >= 1:
        return max_step
    diff = -400 * math.log10(1 / score - 1)
    return max(-max_step, min(max_step, diff))


def promoted_elo(previous_elo: float, score: float, max_step: float) -> float:
    """A new champion's Elo: its opponent's plus what its score against it implies."""
    return previous_elo + elo_from_score(score, max_step)


# -- jobs ----------------------------------------------------------------------------


def train_key(game: str, run_id: str, generation: int) -> str:
    """Idempotency key of a game's training ``generation``."""
    return f"train-{game}-{run_id}-{generation}"


def eval_key(game: str, run_id: str, generation: int, candidate: str, batch: int) -> str:
    """Idempotency key of one evaluation batch of a candidate of one training.

    The generation is part of it: a training can produce the very bytes (so the very
    model id) of an earlier, rejected candidate, and that candidate's old key would
    name the old, finished job, whose end was announced long ago.
    """
    return f"eval-{game}-{run_id}-{generation}-{candidate}-{batch}"


def renamed(ref: DataRef, name: str) -> DataRef:
    """The same blob under the file name a job expects."""
    return DataRef(name=name, sha256=ref.sha256, size=ref.size)


def train_inputs(data: list[DataRef], champion: DataRef | None, model_file: str) -> list[DataRef]:
    """Data blobs as ``data-<i>.npz``, plus the champion as the model to start from."""
    inputs = [renamed(ref, f"data-{i}.npz") for i, ref in enumerate(data)]
    if champion is not None:
        inputs.append(renamed(champion, model_file))
    return inputs


def model_id_for(ref: DataRef) -> str:
    """A model's id: the first 16 hex digits of its blob's sha256."""
    return ref.sha256[:16]
