"""The training coordinator's pure decisions: readiness, SPRT, fallback, Elo, job inputs.

SPRT here is the generalized SPRT with the normal approximation on the per-game score
(a win 1, a draw 1/2, a loss 0), as chess engine testing uses it: with ``s`` the mean
score over ``n`` games, ``var`` its per-game variance and ``s0``, ``s1`` the expected
scores at ``elo0`` and ``elo1``,

    LLR = n * (s1 - s0) * (2 s - s0 - s1) / (2 var)

accepted (H1: the candidate is at least ``elo1`` stronger) at ``LLR >= ln((1-beta)/alpha)``,
rejected at ``LLR <= ln(beta/(1-alpha))``, otherwise more games are needed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from shared.jobs import DataRef

#: A floor under the per-game score variance: all wins (or all draws) have variance 0,
#: which would make the LLR infinite after a single game.
VAR_FLOOR = 1e-3

Verdict = Literal["accept", "reject", "continue"]


@dataclass(frozen=True)
class Readiness:
    """Whether a config should train now, and why (or why not)."""

    ready: bool
    reason: str
    new_games: int
    threshold: int


def threshold(min_new_games: int, games_per_node: int, alive_nodes: int) -> int:
    """New games needed before training: the config's floor, or more on a big cluster."""
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
class Tally:
    """Evaluation games from the candidate's side."""

    wins: int = 0
    losses: int = 0
    draws: int = 0

    @property
    def games(self) -> int:
        """Games played."""
        return self.wins + self.losses + self.draws

    @property
    def score(self) -> float:
        """Mean score, draws counting half (0.5 before any game)."""
        n = self.games
        return (self.wins + self.draws / 2) / n if n else 0.5

    def __add__(self, other: Tally) -> Tally:
        return Tally(self.wins + other.wins, self.losses + other.losses, self.draws + other.draws)


@dataclass(frozen=True)
class SprtParams:
    """Hypotheses (Elo) and error rates of the test."""

    elo0: float = 0.0
    elo1: float = 35.0
    alpha: float = 0.05
    beta: float = 0.05

    @property
    def upper(self) -> float:
        """Accept H1 at or above this LLR: ln((1-beta)/alpha)."""
        return math.log((1 - self.beta) / self.alpha)

    @property
    def lower(self) -> float:
        """Accept H0 (reject the candidate) at or below this LLR: ln(beta/(1-alpha))."""
        return math.log(self.beta / (1 - self.alpha))


@dataclass(frozen=True)
class Outcome:
    """What an evaluation's tally says: a verdict, its LLR, and why."""

    verdict: Verdict
    llr: float
    reason: str


def elo_to_score(elo: float) -> float:
    """Expected score of a player ``elo`` points stronger (logistic Elo model)."""
    return 1 / (1 + 10 ** (-elo / 400))


def llr(tally: Tally, elo0: float, elo1: float) -> float:
    """The GSPRT log-likelihood ratio of H1 (elo1) against H0 (elo0) for ``tally``."""
    n = tally.games
    if n == 0:
        return 0.0
    s = tally.score
    var = (tally.wins * (1 - s) ** 2 + tally.losses * s**2 + tally.draws * (0.5 - s) ** 2) / n
    s0, s1 = elo_to_score(elo0), elo_to_score(elo1)
    return n * (s1 - s0) * (2 * s - s0 - s1) / (2 * max(var, VAR_FLOOR))


def sprt(tally: Tally, params: SprtParams) -> tuple[Verdict, float]:
    """Accept, reject or continue, with the LLR."""
    value = llr(tally, params.elo0, params.elo1)
    if value >= params.upper:
        return "accept", value
    if value <= params.lower:
        return "reject", value
    return "continue", value


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


def train_key(config: str, run_id: str, generation: int) -> str:
    """Idempotency key of a config's training ``generation``."""
    return f"train-{config}-{run_id}-{generation}"


def eval_key(config: str, run_id: str, generation: int, candidate: str, batch: int) -> str:
    """Idempotency key of one evaluation batch of a candidate of one training.

    The generation is part of it: a training can produce the very bytes (so the very
    model id) of an earlier, rejected candidate, and that candidate's old key would
    name the old, finished job, whose end was announced long ago.
    """
    return f"eval-{config}-{run_id}-{generation}-{candidate}-{batch}"


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
