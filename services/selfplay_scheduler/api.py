"""The selfplay scheduler's API messages and the records it keeps in its bucket.

``P.api.selfplay_scheduler.priorities`` (Empty -> Priorities) shows the last round;
``P.api.selfplay_scheduler.override`` (OverrideRequest -> Overrides) sets or clears
an operator's weight for one game. The scheduler bucket (written only by this
service) holds ``overrides`` (Overrides), ``allocation`` (Priorities of the last
change), ``counters`` (Counters) and ``signals`` (signals.Signals).
"""

from __future__ import annotations

from typing import Annotated

import msgspec

#: Keys of the scheduler bucket.
OVERRIDES_KEY = "overrides"
ALLOCATION_KEY = "allocation"
COUNTERS_KEY = "counters"
SIGNALS_KEY = "signals"


class OverrideRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Set ``game``'s operator weight (multiplies its priority); None clears it."""

    game: str
    weight: Annotated[float, msgspec.Meta(ge=0)] | None = None


class Overrides(msgspec.Struct, frozen=True, kw_only=True):
    """The operator weights in force, by game."""

    weights: dict[str, float] = msgspec.field(default_factory=dict)


class Counters(msgspec.Struct, frozen=True, kw_only=True):
    """Numbers that must never repeat across restarts: the submit round and job seeds.

    The round names the idempotency keys (``selfplay-<game>-<round>-<i>``); reusing
    one after a restart would make the job manager answer with an old job.
    """

    round: int = 0
    seed: int = 0


class Priorities(msgspec.Struct, frozen=True, kw_only=True):
    """The scheduler's view after its last round."""

    priorities: dict[str, float] = msgspec.field(default_factory=dict)
    #: Each game's boosts and penalties (see the policy module).
    terms: dict[str, dict[str, float]] = msgspec.field(default_factory=dict)
    shares: dict[str, float] = msgspec.field(default_factory=dict)
    #: The split of ``target`` queued jobs by the shares.
    allocation: dict[str, int] = msgspec.field(default_factory=dict)
    target: int = 0
    #: Queued selfplay jobs (PENDING or DISPATCHED); None when the job manager did not answer.
    queued: int | None = None
    queued_by_game: dict[str, int] = msgspec.field(default_factory=dict)
    free_slots: int = 0
    #: Selfplay slots of the alive nodes (the backlog is sized to them).
    slots: int = 0
    nodes_alive: int = 0
    overrides: dict[str, float] = msgspec.field(default_factory=dict)
    in_training: list[str] = msgspec.field(default_factory=list)
    plateau: dict[str, int] = msgspec.field(default_factory=dict)
    #: Per game: seconds per game observed, games of the last job, the run aimed at.
    sizing: dict[str, dict[str, float]] = msgspec.field(default_factory=dict)
    updated_at: float = 0.0
