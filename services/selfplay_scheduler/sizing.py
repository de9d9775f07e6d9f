"""Games per selfplay job, per game, learned from the durations of finished jobs.

Every JOB_COMPLETED of a selfplay job says how long the attempt ran (``run_s``) and,
in its result, how many games it played; :func:`policy.observe_pace` folds that into
a seconds-per-game average and :func:`policy.games_per_job` turns the average into the
next job's size. The averages live in memory: a restarted scheduler starts from the
configured sizes and relearns them from its first finished jobs.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from services.selfplay_scheduler import policy
from services.selfplay_scheduler.config import SelfplaySchedulerConfig
from shared.events import JobCompleted


def _games(result: dict[str, Any]) -> int:
    value = result.get("games", 0)
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


class Sizer:
    """Seconds per game and the last size, by game."""

    def __init__(self, counts: Counter[str]) -> None:
        self.pace: dict[str, float] = {}
        self.last: dict[str, int] = {}
        self.counts = counts

    def observe(self, done: JobCompleted) -> bool:
        """Learn from a finished job; whether it was a selfplay job that taught something."""
        game = done.labels.get("game", "")
        if done.labels.get("kind") != "selfplay" or not game:
            return False
        games = _games(done.result)
        pace = policy.observe_pace(self.pace.get(game), games, done.run_s)
        if pace is None or pace == self.pace.get(game):
            self.counts["durations_unusable"] += 1
            return False
        self.pace[game] = pace
        self.counts["durations_observed"] += 1
        return True

    def games(self, game: str, cfg: SelfplaySchedulerConfig) -> int:
        """The size of ``game``'s next job (remembered as its last size)."""
        default = cfg.games_per_job.get(game, cfg.default_games_per_job)
        size = policy.games_per_job(
            self.pace.get(game),
            cfg.target_job_s,
            default,
            self.last.get(game),
            cfg.max_games_per_job,
        )
        self.last[game] = size
        return size

    def view(self, cfg: SelfplaySchedulerConfig) -> dict[str, dict[str, float]]:
        """Per game: seconds per game, the last size and the run it aims at."""
        return {
            game: {
                "seconds_per_game": round(pace, 6),
                "games_per_job": float(self.last.get(game, 0)),
                "target_job_s": cfg.target_job_s,
            }
            for game, pace in sorted(self.pace.items())
        }
