"""Records the training coordinator keeps in the models bucket, and its API replies.

Keys of the models bucket (this service is its only writer):

==========================  ==================================================
``state.<game>``          CoordinatorState: where the game's cycle is
``champion.<game>``       Champion (shared.training), switched by one CAS
``model.<game>.<id>``     ModelRecord (shared.training), one per model
``elo.<game>``            EloTable: every champion in promotion order
==========================  ==================================================
"""

from __future__ import annotations

import uuid
from typing import Literal

import msgspec

from shared import tracing
from shared.jobs import DataRef
from shared.tracing import TraceContext
from shared.training import Champion, ModelRecord

Phase = Literal["idle", "training", "evaluating"]
Decision = Literal["", "accept", "reject"]


def state_key(game: str) -> str:
    """Key of a game's CoordinatorState."""
    return f"state.{game}"


def champion_key(game: str) -> str:
    """Key of a game's Champion."""
    return f"champion.{game}"


def model_key(game: str, model_id: str) -> str:
    """Key of one ModelRecord."""
    return f"model.{game}.{model_id}"


def model_prefix(game: str) -> str:
    """Prefix of every ModelRecord key of a game."""
    return f"model.{game}."


def elo_key(game: str) -> str:
    """Key of a game's EloTable."""
    return f"elo.{game}"


def new_run_id() -> str:
    """A fresh id for a state record, so job keys of a re-created state never collide."""
    return uuid.uuid4().hex[:8]


class CoordinatorState(msgspec.Struct, frozen=True, kw_only=True):
    """One game's cycle: idle -> training -> evaluating -> idle, every change a CAS.

    ``generation`` counts trainings started; the job keys derive from it and from the
    candidate and batch, so a step redone after a crash submits the same job again.
    ``decision`` set while ``phase`` is evaluating means the verdict is taken and its
    effects (champion switch, records, events) are being applied by ``decided_by``.
    """

    game: str
    run_id: str
    phase: Phase = "idle"
    phase_since: float = 0.0
    generation: int = 0
    training_job: str = ""
    #: Manifest.games_total when the last successful training started.
    games_at_training: int = 0
    #: Manifest.games_total when the training in flight started.
    training_games: int = 0
    last_training_at: float = 0.0
    train_node: str = ""
    candidate: str = ""
    candidate_ref: DataRef | None = None
    #: The champion the candidate plays ("" and no ref: the random player).
    opponent: str = ""
    opponent_ref: DataRef | None = None
    opponent_elo: float = 0.0
    batch: int = 0
    eval_job: str = ""
    counted: list[str] = msgspec.field(default_factory=list)
    wins: int = 0
    losses: int = 0
    draws: int = 0
    llr: float = 0.0
    decision: Decision = ""
    reason: str = ""
    decided_by: str = ""
    decided_at: float = 0.0
    last_result: str = ""
    promotions: int = 0
    rejections: int = 0
    training_failures: int = 0
    updated_at: float = 0.0
    #: The generation's span (W3C traceparent): its training and evaluation jobs, and
    #: its events up to the promotion or rejection, are one trace ("" before tracing).
    traceparent: str = ""

    @property
    def span(self) -> TraceContext | None:
        """The generation's span, to work in with ``tracing.use``."""
        return tracing.from_value(self.traceparent, "coordinator_state")


class EloEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One champion of a game in the Elo table."""

    generation: int
    model_id: str
    elo: float
    promoted_at: float
    previous: str = ""
    games: int = 0
    score: float = 0.0


class EloTable(msgspec.Struct, frozen=True, kw_only=True):
    """Every champion of a game, oldest first (the random player is Elo 0)."""

    game: str
    entries: list[EloEntry] = msgspec.field(default_factory=list)


class GameModels(msgspec.Struct, frozen=True, kw_only=True):
    """A game's champion, its models (oldest first) and where its cycle is."""

    game: str
    champion: Champion | None
    models: list[ModelRecord]
    state: CoordinatorState | None


class ModelsReply(msgspec.Struct, frozen=True, kw_only=True):
    """Reply of ``P.api.training_coordinator.models``."""

    games: list[GameModels]


class EloReply(msgspec.Struct, frozen=True, kw_only=True):
    """Reply of ``P.api.training_coordinator.elo``."""

    tables: list[EloTable]
