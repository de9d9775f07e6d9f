"""Configuration of the training coordinator."""

from __future__ import annotations

from typing import Annotated

import msgspec

from shared.config import BaseConfig, Positive, PositiveInt
from shared.sprt import GATE
from shared.subjects import check_token
from shared.training import MNK_GAMES

Probability = Annotated[float, msgspec.Meta(gt=0, lt=1)]
NonNegative = Annotated[float, msgspec.Meta(ge=0)]


def _default_min_new_games() -> dict[str, int]:
    # Bigger boards need more games before another training run is worth it.
    return {"3x3k3": 600, "4x4k3": 2_000, "5x5k4": 5_000}


class TrainingCoordinatorConfig(BaseConfig, kw_only=True, forbid_unknown_fields=True):
    """Training coordinator settings (seconds unless named otherwise)."""

    #: The games this coordinator trains (default: every m,n,k-game).
    games: list[str] = msgspec.field(default_factory=lambda: sorted(MNK_GAMES))
    #: Least new games since the last training, per game (others: ``default_min_new_games``).
    min_new_games: dict[str, PositiveInt] = msgspec.field(default_factory=_default_min_new_games)
    default_min_new_games: PositiveInt = 1_000
    #: The threshold grows with the cluster: at least this many new games per alive node.
    games_per_node: Annotated[int, msgspec.Meta(ge=0)] = 100
    #: Least time between two trainings of one game.
    cooldown_s: NonNegative = 60.0
    #: How often readiness (and recovery of interrupted steps) is checked.
    interval_s: Positive = 1.0
    #: How often the record of each job waited on is read from the job manager, so a
    #: lost JOB_COMPLETED or JOB_FAILED never leaves a cycle waiting (events wake up;
    #: the record is the truth).
    reconcile_interval_s: Positive = 5.0
    #: Games of one evaluation batch, the cap of one evaluation, and the fallback rule
    #: (accept iff the score reaches it) when the cap is hit without an SPRT decision.
    #: SPRT hypotheses (Elo) and error rates (shared/sprt.py).
    #:
    #: Sized for what a 10-minute run affords (a few hundred evaluation games per
    #: candidate) and for the improvements one generation makes (10-30 Elo). Simulated
    #: with 50 % draws, P(promote) / mean games for a candidate of true Elo -20, 0,
    #: +10, +20, +35: these settings 0.01/136, 0.14/189, 0.45/213, 0.71/218, 0.93/212;
    #: the former (elo1 35, beta 0.05, cap 400, fallback 0.55) 0.00/163, 0.03/267,
    #: 0.10/318, 0.29/325, 0.74/265, which rejected the +20 candidates a run makes.
    #: A worse candidate still almost never passes (alpha 0.05 at elo0 0); an equal
    #: one sometimes does, which costs nothing (AlphaZero promoted every network).
    eval_batch_games: PositiveInt = 40
    max_eval_games: PositiveInt = 240
    fallback_win_rate: Probability = 0.52
    elo0: float = GATE.elo0
    elo1: float = GATE.elo1
    alpha: Probability = GATE.alpha
    beta: Probability = GATE.beta
    #: Largest Elo change one promotion can record (a perfect score has no finite Elo).
    max_elo_step: Positive = 400.0
    #: Job timeouts, attempts, and the capabilities their nodes must serve.
    train_timeout_s: Positive = 3600.0
    eval_timeout_s: Positive = 1800.0
    job_max_attempts: Annotated[int, msgspec.Meta(ge=1, le=100)] = 3
    #: Priority of training and evaluation jobs: an agent whose slot frees starts the
    #: highest-priority job it holds, so the loop's next step goes ahead of queued
    #: selfplay (priority 0) instead of waiting behind the backlog.
    job_priority: int = 10
    train_capability: str = "train"
    eval_capability: str = "evaluate"
    #: Training epochs passed to the train job (0: the workload's default).
    train_epochs: Annotated[int, msgspec.Meta(ge=0)] = 0
    #: Newest games a training run reads.
    train_window_games: PositiveInt = 20_000
    #: A node whose NodeInfo stopped this long ago is LOST (``shared.liveness``) and no
    #: longer counts.
    node_alive_s: Positive = 5.0
    #: Requests to the job manager, sync planner and node selector wait this long.
    request_timeout_s: Positive = 2.0
    #: Consecutive failures that open a dependency's breaker, and how long it stays open.
    breaker_failures: PositiveInt = 5
    breaker_recovery_s: Positive = 10.0
    #: A decision left unfinished by another instance is taken over after this long.
    takeover_after_s: Positive = 30.0
    #: Ack wait of the durable event consumer (an unacked event comes back after it).
    consumer_ack_wait_s: Positive = 30.0
    #: The longest one step (a game's tick, or one event) may take; a step cut
    #: short leaves a consistent state (every change is a CAS) and is redone later.
    step_timeout_s: Positive = 25.0

    def __post_init__(self) -> None:
        if not self.games:
            raise ValueError("games: at least one game")
        for name in self.games:
            check_token(name, "config field 'games'")
        if len(set(self.games)) != len(self.games):
            raise ValueError("games: a game is listed twice")
        check_token(self.train_capability, "config field 'train_capability'")
        check_token(self.eval_capability, "config field 'eval_capability'")
        if self.elo1 <= self.elo0:
            raise ValueError("elo1 must be greater than elo0")
        if self.max_eval_games < self.eval_batch_games:
            raise ValueError("max_eval_games must be >= eval_batch_games")
        if self.step_timeout_s >= self.consumer_ack_wait_s:
            # Else an event still being handled would be handed out a second time.
            raise ValueError("step_timeout_s must be < consumer_ack_wait_s")

    def threshold_base(self, game: str) -> int:
        """The least new games for ``game`` before the cluster scaling applies."""
        return self.min_new_games.get(game, self.default_min_new_games)
