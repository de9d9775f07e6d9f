"""The scheduler bucket, written only by the selfplay scheduler, and what it holds.

Keys: ``overrides`` (operator weights), ``signals`` (what training, evaluation and
promotion events said, per game), ``counters`` (the submit round and job seeds,
never reused) and ``allocation`` (the view of the last allocation change). Each is
read once at start, so a restarted scheduler carries on where it stopped, and written
before it is relied on: an event is acked only after its signals are stored, a round
number is stored before any job names it.
"""

from __future__ import annotations

import logging
from datetime import datetime

import anyio
import msgspec
import nats.errors
from nats.js.kv import KeyValue

from services.selfplay_scheduler.api import (
    ALLOCATION_KEY,
    COUNTERS_KEY,
    OVERRIDES_KEY,
    SIGNALS_KEY,
    Counters,
    Overrides,
    Priorities,
)
from services.selfplay_scheduler.signals import Signals, apply, event_game
from shared.codec import encode
from shared.contracts import Event
from shared.errors import BadRequest, Unavailable
from shared.events import decode_data
from shared.kv import read

log = logging.getLogger("ringmaster.selfplay_scheduler.store")


def event_time(event: Event, default: float) -> float:
    """The event's own time (wall clock seconds); ``default`` when it does not parse."""
    try:
        return datetime.fromisoformat(event.time).timestamp()
    except ValueError:
        return default


class Store:
    """The scheduler's durable state, mirrored in memory."""

    def __init__(self, kv: KeyValue, games: list[str]) -> None:
        self.kv = kv
        self.games = games
        self.overrides: dict[str, float] = {}
        self.signals = Signals()
        self.counters = Counters()
        self.last_allocation: Priorities | None = None
        self._lock = anyio.Lock()

    async def restore(self) -> None:
        """Read every key (missing ones keep their defaults)."""
        overrides = await read(self.kv, OVERRIDES_KEY, Overrides)
        if overrides is not None:
            known = set(self.games)
            self.overrides = {c: w for c, w in overrides[0].weights.items() if c in known}
        signals = await read(self.kv, SIGNALS_KEY, Signals)
        self.signals = signals[0] if signals is not None else Signals()
        counters = await read(self.kv, COUNTERS_KEY, Counters)
        self.counters = counters[0] if counters is not None else Counters()
        last = await read(self.kv, ALLOCATION_KEY, Priorities)
        self.last_allocation = last[0] if last is not None else None
        log.info(
            "restored: overrides %s, round %d, signals of %d games",
            self.overrides,
            self.counters.round,
            len(self.signals.games),
        )

    async def apply_event(self, event: Event, now: float) -> str:
        """Fold one event into the signals; the outcome's name, for counting.

        Raises (so the consumer delivers the event again) only when the store fails.
        """
        try:
            data = decode_data(event)
        except msgspec.ValidationError as exc:
            log.warning("%s %s does not decode: %s", event.type, event.id, exc)
            return "invalid"
        game = event_game(data) if data is not None else None
        if data is None or game is None or game not in self.games:
            return "ignored"
        new = apply(self.signals, game, data, event_time(event, now))
        if new is None:
            return "unchanged"
        await self.kv.put(SIGNALS_KEY, encode(new))
        self.signals = new
        return "applied"

    async def set_override(self, game: str, weight: float | None) -> dict[str, float]:
        """Set (or with None clear) a game's operator weight; the weights in force."""
        if game not in self.games:
            raise BadRequest(f"unknown game {game!r}; known: {self.games}")
        async with self._lock:  # two overrides at once must not lose one
            weights = dict(self.overrides)
            if weight is None:
                weights.pop(game, None)
            else:
                weights[game] = weight
            try:
                await self.kv.put(OVERRIDES_KEY, encode(Overrides(weights=weights)))
            except (nats.errors.Error, TimeoutError) as exc:
                raise Unavailable(f"cannot store the override: {exc!r}") from exc
            self.overrides = weights
        return weights

    async def reserve(self, jobs: int) -> tuple[int, int]:
        """A new submit round and ``jobs`` seeds: (round, first seed). Raises if not stored."""
        reserved = Counters(round=self.counters.round + 1, seed=self.counters.seed + jobs)
        await self.kv.put(COUNTERS_KEY, encode(reserved))
        first_seed, self.counters = self.counters.seed, reserved
        return reserved.round, first_seed

    async def record_allocation(self, view: Priorities) -> bool:
        """Keep the view of an allocation change; False when it could not be stored
        (best effort: it only spares a restart from announcing an unchanged split)."""
        self.last_allocation = view
        try:
            await self.kv.put(ALLOCATION_KEY, encode(view))
        except (nats.errors.Error, TimeoutError) as exc:
            log.warning("cannot record the allocation: %r", exc)
            return False
        return True
