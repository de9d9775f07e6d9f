"""Configuration of the selfplay scheduler."""

from __future__ import annotations

from typing import Annotated

import msgspec

from services.selfplay_scheduler.policy import PriorityWeights
from shared.config import BaseConfig, Positive, PositiveInt
from shared.liveness import LOST_AFTER
from shared.training import MNK_GAMES, GameName

#: Games per selfplay job by game: bigger boards take longer per game.
DEFAULT_GAMES_PER_JOB: dict[str, int] = {"3x3k3": 200, "4x4k3": 100, "5x5k4": 50}


class SelfplaySchedulerConfig(BaseConfig, kw_only=True, forbid_unknown_fields=True):
    """Selfplay scheduler settings (seconds unless named otherwise)."""

    #: How often a round sizes the queue and submits jobs.
    interval_s: Positive = 2.0
    #: The games to schedule.
    games: list[GameName] = msgspec.field(default_factory=lambda: sorted(MNK_GAMES))
    #: Queued jobs wanted per selfplay slot of the alive nodes (the backlog), so a
    #: freed slot finds work at once instead of waiting for a round.
    backlog_per_slot: Annotated[int, msgspec.Meta(ge=0)] = 1
    #: Queued jobs wanted beyond the backlog.
    queue_buffer: Annotated[int, msgspec.Meta(ge=0)] = 1
    #: Seconds a selfplay job should run: games per job are sized to it from the
    #: durations observed (see the policy module); the job's fixed cost is then a small
    #: share of its run.
    target_job_s: Positive = 30.0
    #: Games per job never exceed this.
    max_games_per_job: PositiveInt = 100_000
    #: At most this many submissions per round (bounds a burst after a big change).
    max_submit_per_round: PositiveInt = 64
    #: The node capability (and capability pool) of selfplay work.
    capability: str = "selfplay"
    #: A node is alive until silent for this many of its intervals (``shared.liveness``).
    lost_after_intervals: Positive = LOST_AFTER
    #: Games of a game's first jobs, before any duration was observed.
    games_per_job: dict[str, PositiveInt] = msgspec.field(
        default_factory=lambda: dict(DEFAULT_GAMES_PER_JOB)
    )
    #: Games per job of a game missing from ``games_per_job``.
    default_games_per_job: PositiveInt = 100
    exploration: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.2
    job_timeout_s: Positive = 1800.0
    max_attempts: Annotated[int, msgspec.Meta(ge=1, le=100)] = 2
    #: The Elo a champion should reach; the gap below it raises the priority.
    elo_target: float = 1000.0
    #: No game with a priority gets less than this share (capped at 1 / games).
    min_share: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.1
    weights: PriorityWeights = msgspec.field(default_factory=PriorityWeights)
    #: A TRAINING_STARTED with no finish for this long no longer counts as training.
    training_stale_s: Positive = 7200.0
    #: Job manager calls: reply timeout; the breaker opens after this many failures
    #: in a row and lets a trial call through after ``breaker_recovery_s``.
    request_timeout_s: Positive = 2.0
    breaker_failures: PositiveInt = 3
    breaker_recovery_s: Positive = 10.0

    def __post_init__(self) -> None:
        if not self.games:
            raise ValueError("games must name at least one game")
        if len(set(self.games)) != len(self.games):
            raise ValueError("games must not repeat a game")
