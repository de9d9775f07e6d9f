"""The sequential probability ratio test on a match's tallies (the normal approximation).

With H0: the candidate is ``elo0`` stronger and H1: it is ``elo1`` stronger, the
generalised SPRT's log-likelihood ratio for n games of mean score s and variance v is
``n (s1 - s0) (2 s - s0 - s1) / (2 v)``, where s0 and s1 are the scores the two Elo
differences predict. It crosses ``log((1 - beta) / alpha)`` to accept H1 and
``log(beta / (1 - alpha))`` to accept H0. A match of draws only has no variance and
decides nothing: the LLR is 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Decision = Literal["accept", "reject", "continue"]


def expected_score(elo: float) -> float:
    """The score a player ``elo`` points stronger makes on average."""
    return float(1.0 / (1.0 + 10.0 ** (-elo / 400.0)))


@dataclass(frozen=True)
class Sprt:
    """Test parameters (the training coordinator's defaults)."""

    elo0: float = 0.0
    elo1: float = 35.0
    alpha: float = 0.05
    beta: float = 0.05

    def llr(self, wins: int, draws: int, losses: int) -> float:
        """Log-likelihood ratio of H1 against H0 for these tallies."""
        w, d, l_ = wins + 0.5, float(draws), losses + 0.5
        n = w + d + l_
        mean = (w + 0.5 * d) / n
        var = (w * (1.0 - mean) ** 2 + d * (0.5 - mean) ** 2 + l_ * mean**2) / n
        s0, s1 = expected_score(self.elo0), expected_score(self.elo1)
        return n * (s1 - s0) * (2.0 * mean - s0 - s1) / (2.0 * var)

    def decide(self, wins: int, draws: int, losses: int) -> Decision:
        """``accept`` (H1), ``reject`` (H0) or ``continue``."""
        llr = self.llr(wins, draws, losses)
        if llr >= math.log((1.0 - self.beta) / self.alpha):
            return "accept"
        if llr <= math.log(self.beta / (1.0 - self.alpha)):
            return "reject"
        return "continue"
