"""The one sequential probability ratio test of the project: pure functions on a tally.

The training coordinator's gate and the workload's early stop of an evaluation match
both decide with this module, so a match never stops on a verdict the gate would not
give on the same tally.

It is the generalized SPRT with the normal approximation on the per-game score (a win
1, a draw 1/2, a loss 0), as chess engine testing uses it: with ``s`` the mean score
over ``n`` games, ``var`` its per-game variance and ``s0``, ``s1`` the expected scores
at ``elo0`` and ``elo1``,

    LLR = n * (s1 - s0) * (2 s - s0 - s1) / (2 var)

accepted (H1: the candidate is at least ``elo1`` stronger) at ``LLR >= ln((1-beta)/alpha)``,
rejected at ``LLR <= ln(beta/(1-alpha))``, otherwise more games are needed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

#: A floor under the per-game score variance: all wins (or all draws) have variance 0,
#: which would make the LLR infinite after a single game.
VAR_FLOOR = 1e-3

Verdict = Literal["accept", "reject", "continue"]


@dataclass(frozen=True)
class Tally:
    """Games from the candidate's side."""

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


def elo_to_score(elo: float) -> float:
    """Expected score of a player ``elo`` points stronger (logistic Elo model)."""
    return 1 / (1 + 10 ** (-elo / 400))


#: The promotion gate by default: sized for what a 10-minute run on two cores affords
#: (the reasoning is in services/training_coordinator/config.py). The coordinator's
#: settings start from it, and an evaluate job whose arguments name no bounds uses it.
GATE = SprtParams(elo0=0.0, elo1=25.0, alpha=0.05, beta=0.2)


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
