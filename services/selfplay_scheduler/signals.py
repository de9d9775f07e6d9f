"""What training, evaluation and promotion events tell the scheduler, per game.

The events arrive at least once and not always in order (a failed handler's event
comes back behind later ones), so :func:`apply` is idempotent and order-tolerant:
each change is keyed by the event's own time, and one older than the last change of
the same kind is ignored. The plateau count is the set of rejected candidate ids,
so a redelivered rejection never counts twice. Pure functions, no I/O.
"""

from __future__ import annotations

import msgspec

from shared.events import (
    EvaluationCompleted,
    EventData,
    ModelPromoted,
    TrainingCompleted,
    TrainingFailed,
    TrainingStarted,
)

#: Rejected candidates remembered per game (the plateau count saturates here).
MAX_REJECTED = 64

#: The event types the scheduler consumes.
CONSUMED: tuple[type[EventData], ...] = (
    TrainingStarted,
    TrainingCompleted,
    TrainingFailed,
    EvaluationCompleted,
    ModelPromoted,
)


class GameSignals(msgspec.Struct, frozen=True, kw_only=True):
    """One game's training state as the events describe it (times: wall clock)."""

    training_job: str = ""
    training_since: float | None = None
    #: The latest TRAINING_COMPLETED or TRAINING_FAILED.
    finished_at: float = 0.0
    #: The latest completed training or new champion (for staleness).
    refreshed_at: float | None = None
    #: Candidates rejected since ``plateau_reset_at`` (the last accept or promotion).
    rejected: list[str] = msgspec.field(default_factory=list)
    plateau_reset_at: float = 0.0

    def in_training(self, now: float, stale_after_s: float) -> bool:
        """A training job started and has not finished (nor gone silent too long)."""
        since = self.training_since
        return since is not None and now - since < stale_after_s

    @property
    def plateau(self) -> int:
        """Candidates rejected in a row."""
        return len(self.rejected)


class Signals(msgspec.Struct, frozen=True, kw_only=True):
    """Every game's signals (key ``signals`` in the scheduler bucket)."""

    games: dict[str, GameSignals] = msgspec.field(default_factory=dict)


def _later(a: float | None, b: float) -> float:
    return b if a is None else max(a, b)


def apply_one(s: GameSignals, data: EventData, at: float) -> GameSignals:
    """``s`` after the event ``data`` that happened at ``at`` (``s`` itself if no change)."""
    replace = msgspec.structs.replace
    if isinstance(data, TrainingStarted):
        # A start older than the last finish is a late redelivery of a finished job.
        if at <= s.finished_at or (s.training_since is not None and at <= s.training_since):
            return s
        return replace(s, training_job=data.job_id, training_since=at)
    if isinstance(data, TrainingCompleted | TrainingFailed):
        if at <= s.finished_at:
            return s
        started = s.training_since
        still = started is not None and started > at  # a newer training already began
        s = replace(
            s,
            finished_at=at,
            training_job=s.training_job if still else "",
            training_since=started if still else None,
        )
        if isinstance(data, TrainingCompleted):
            s = replace(s, refreshed_at=_later(s.refreshed_at, at))
        return s
    if isinstance(data, EvaluationCompleted):
        if at < s.plateau_reset_at:
            return s
        if data.decision == "accept":
            return replace(s, rejected=[], plateau_reset_at=at)
        if data.candidate in s.rejected:
            return s
        return replace(s, rejected=[*s.rejected, data.candidate][-MAX_REJECTED:])
    if isinstance(data, ModelPromoted):
        reset = at >= s.plateau_reset_at
        return replace(
            s,
            refreshed_at=_later(s.refreshed_at, at),
            rejected=[] if reset else s.rejected,
            plateau_reset_at=max(s.plateau_reset_at, at),
        )
    return s


def apply(signals: Signals, game: str, data: EventData, at: float) -> Signals | None:
    """``signals`` after one event of ``game``; None when nothing changed."""
    current = signals.games.get(game, GameSignals())
    new = apply_one(current, data, at)
    if new == current:
        return None
    return Signals(games={**signals.games, game: new})


def event_game(data: EventData) -> str | None:
    """The game a consumed event is about; None for other events."""
    if isinstance(
        data,
        TrainingStarted | TrainingCompleted | TrainingFailed | EvaluationCompleted | ModelPromoted,
    ):
        return data.game
    return None
