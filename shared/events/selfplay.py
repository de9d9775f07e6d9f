"""Events of the self-play loop: data, selfplay allocation, training, evaluation."""

from __future__ import annotations

from typing import ClassVar, Literal

import msgspec

from shared.events.base import EventData

# -- the self-play loop ---------------------------------------------------------------


class DataAvailable(EventData, frozen=True, kw_only=True):
    """New selfplay games were recorded in a game's manifest."""

    TYPE: ClassVar[str] = "DATA_AVAILABLE"
    game: str
    sha256: str
    games: int
    games_total: int


class DataSyncStarted(EventData, frozen=True, kw_only=True):
    """The sync planner began moving data (a prefetch to a node, or retention)."""

    TYPE: ClassVar[str] = "DATA_SYNC_STARTED"
    game: str
    node_id: str = ""
    blobs: int
    bytes: int = 0


class DataSyncCompleted(EventData, frozen=True, kw_only=True):
    """A data movement finished."""

    TYPE: ClassVar[str] = "DATA_SYNC_COMPLETED"
    game: str
    node_id: str = ""
    blobs: int
    bytes: int = 0
    deleted: int = 0


class DataSyncFailed(EventData, frozen=True, kw_only=True):
    """A data movement failed."""

    TYPE: ClassVar[str] = "DATA_SYNC_FAILED"
    game: str
    node_id: str = ""
    error: str


class SelfplayTargetUpdated(EventData, frozen=True, kw_only=True):
    """The scheduler's target number of queued selfplay jobs changed."""

    TYPE: ClassVar[str] = "SELFPLAY_TARGET_UPDATED"
    target: int
    free_slots: int


class SelfplayAllocationUpdated(EventData, frozen=True, kw_only=True):
    """The scheduler's split of selfplay work across games changed."""

    TYPE: ClassVar[str] = "SELFPLAY_ALLOCATION_UPDATED"
    priorities: dict[str, float]
    allocation: dict[str, int]


class TrainingStarted(EventData, frozen=True, kw_only=True):
    """A training job was submitted for a game."""

    TYPE: ClassVar[str] = "TRAINING_STARTED"
    game: str
    job_id: str
    games: int
    parent: str = ""


class TrainingCompleted(EventData, frozen=True, kw_only=True):
    """A training job produced a candidate model."""

    TYPE: ClassVar[str] = "TRAINING_COMPLETED"
    game: str
    job_id: str
    model_id: str
    losses: list[float] = msgspec.field(default_factory=list)


class TrainingFailed(EventData, frozen=True, kw_only=True):
    """A training job failed (or its output was unusable)."""

    TYPE: ClassVar[str] = "TRAINING_FAILED"
    game: str
    job_id: str
    error: str


class EvaluationStarted(EventData, frozen=True, kw_only=True):
    """Evaluation games of a candidate against the champion began."""

    TYPE: ClassVar[str] = "EVALUATION_STARTED"
    game: str
    candidate: str
    champion: str
    job_id: str


class EvaluationCompleted(EventData, frozen=True, kw_only=True):
    """An evaluation reached a decision (accept or reject), or failed (closed: reject)."""

    TYPE: ClassVar[str] = "EVALUATION_COMPLETED"
    game: str
    candidate: str
    champion: str
    wins: int
    losses: int
    draws: int
    llr: float
    decision: Literal["accept", "reject"]
    reason: str = ""


class ModelPromoted(EventData, frozen=True, kw_only=True):
    """A candidate became its game's champion."""

    TYPE: ClassVar[str] = "MODEL_PROMOTED"
    game: str
    model_id: str
    generation: int
    elo: float
    previous: str = ""


class ModelRejected(EventData, frozen=True, kw_only=True):
    """A candidate was not promoted; it is archived."""

    TYPE: ClassVar[str] = "MODEL_REJECTED"
    game: str
    model_id: str
    reason: str
