"""Contracts of the self-play loop: games, models, champions, data manifests.

The selfplay scheduler, sync planner and training coordinator share these records
through the bus and the KV buckets (``models`` written only by the training
coordinator, ``manifests`` only by the sync planner, ``scheduler`` only by the
selfplay scheduler). Job kinds travel in ``JobSpec.labels``: ``kind`` is one of
``selfplay``, ``train``, ``evaluate``, ``prefetch`` and ``game`` names the game.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Annotated, Literal

import msgspec

from shared.jobs import DataRef

#: m,n,k-games the reference workload plays: board m x n, k in a row wins.
MNK_GAMES: dict[str, tuple[int, int, int]] = {
    "3x3k3": (3, 3, 3),
    "4x4k3": (4, 4, 3),
    "5x5k4": (5, 5, 4),
}

GameName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]+$")]
JobKind = Literal["selfplay", "train", "evaluate", "prefetch"]
ModelStatus = Literal["champion", "candidate", "rejected", "archived"]

#: File names jobs use for their model inputs and outputs.
MODEL_FILE = "model.npz"
CANDIDATE_FILE = "candidate.npz"
CHAMPION_FILE = "champion.npz"
GAMES_FILE = "games.npz"


class ModelRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One model in the models bucket (key ``model.<game>.<model_id>``)."""

    game: GameName
    model_id: str
    ref: DataRef
    generation: int
    status: ModelStatus
    elo: float = 0.0
    parent: str = ""
    created_at: float
    training_job: str = ""
    decided_at: float | None = None
    evaluation: dict[str, float] = msgspec.field(default_factory=dict)


class Champion(msgspec.Struct, frozen=True, kw_only=True):
    """The current best model of a game (key ``champion.<game>``), switched by CAS."""

    game: GameName
    model_id: str
    ref: DataRef
    generation: int
    elo: float
    since: float


class ManifestEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One blob of selfplay games."""

    ref: DataRef
    games: int
    job_id: str
    model_id: str = ""
    created_at: float


class Manifest(msgspec.Struct, frozen=True, kw_only=True):
    """The game data of one game (key ``<game>`` in the manifests bucket)."""

    game: GameName
    games_total: int = 0
    entries: list[ManifestEntry] = msgspec.field(default_factory=list)
    updated_at: float = 0.0


def games_held(entries: Iterable[ManifestEntry]) -> int:
    """Games in the listed entries."""
    return sum(e.games for e in entries)


def training_window(entries: Sequence[ManifestEntry], max_games: int) -> list[ManifestEntry]:
    """The newest entries adding up to at most ``max_games`` games, oldest first.

    The window is contiguous: it stops at the first entry that does not fit. The
    newest entry is always in it, however many games it holds: jobs are sized by
    their run time, so one job of a fast game can hold more games than the window,
    and an empty window would starve training for good (the trainer subsamples).
    A blob listed twice is handed out (and counted) once. The one rule: the sync
    planner serves it, and the training coordinator reads it from the manifest itself
    when the planner does not answer.
    """
    chosen: list[ManifestEntry] = []
    seen: set[str] = set()
    total = 0
    for entry in reversed(entries):
        if entry.ref.sha256 in seen:
            continue
        if chosen and total + entry.games > max_games:
            break
        seen.add(entry.ref.sha256)
        chosen.append(entry)
        total += entry.games
    chosen.reverse()
    return chosen


class TrainingDataRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Ask the sync planner for the recent window of a game's data."""

    game: GameName
    max_games: Annotated[int, msgspec.Meta(ge=1)] = 20_000


class TrainingData(msgspec.Struct, frozen=True, kw_only=True):
    """The newest blobs of a game adding up to at most ``max_games`` games."""

    game: GameName
    refs: list[DataRef]
    games: int
    games_total: int


class PrefetchRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Ask the sync planner to put blobs in a node's cache before a job needs them."""

    game: GameName
    node_id: str
    refs: list[DataRef]


class GameRef(msgspec.Struct, frozen=True, kw_only=True):
    """Names one game in a request (empty: every game)."""

    game: str = ""
