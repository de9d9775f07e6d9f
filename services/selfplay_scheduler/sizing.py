"""Games per selfplay job, per config, learned from the durations of finished jobs.

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
    """Seconds per game and the last size, by config."""

    def __init__(self, counts: Counter[str]) -> None:
        self.pace: dict[str, float] = {}
        self.last: dict[str, int] = {}
        self.counts = counts

    def observe(self, done: JobCompleted) -> bool:
        """Learn from a finished job; whether it was a selfplay job that taught something."""
        config = done.labels.get("config", "")
        if done.labels.get("kind") != "selfplay" or not config:
            return False
        games = _games(done.result)
        pace = policy.observe_pace(self.pace.get(config), games, done.run_s)
        if pace is None or pace == self.pace.get(config):
            self.counts["durations_unusable"] += 1
            return False
        self.pace[config] = pace
        self.counts["durations_observed"] += 1
        return True

    def games(self, config: str, cfg: SelfplaySchedulerConfig) -> int:
        """The size of ``config``'s next job (remembered as its last size)."""
        default = cfg.games_per_job.get(config, cfg.default_games_per_job)
        size = policy.games_per_job(
            self.pace.get(config),
            cfg.target_job_s,
            default,
            self.last.get(config),
            cfg.max_games_per_job,
        )
        self.last[config] = size
        return size

    def view(self, cfg: SelfplaySchedulerConfig) -> dict[str, dict[str, float]]:
        """Per config: seconds per game, the last size and the run it aims at."""
        return {
            config: {
                "seconds_per_game": round(pace, 6),
                "games_per_job": float(self.last.get(config, 0)),
                "target_job_s": cfg.target_job_s,
            }
            for config, pace in sorted(self.pace.items())
        }
