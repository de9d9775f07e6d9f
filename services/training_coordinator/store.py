"""The models bucket, as the training coordinator reads and writes it.

Every change is a compare-and-set on the key's revision, so a second instance (or a
restarted one) can never overwrite a step it did not see. Model records and the Elo
table are only ever changed in ways that are safe to repeat: a step redone after a
crash writes the same thing again.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import msgspec
from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from services.training_coordinator.records import (
    CoordinatorState,
    EloEntry,
    EloTable,
    champion_key,
    elo_key,
    model_key,
    model_prefix,
    new_run_id,
    state_key,
)
from shared import otel
from shared.codec import decode, encode
from shared.errors import Conflict
from shared.kv import cas_update, read, read_all
from shared.training import Champion, ModelRecord

#: Compare-and-set rounds before a contended write gives up (and is retried later).
ATTEMPTS = 5


class ModelStore:
    """Typed access to the coordinator's keys of the models bucket."""

    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    # -- state -----------------------------------------------------------------------
    async def state(self, game: str) -> CoordinatorState:
        """The game's state, created idle when there is none yet."""
        for _ in range(ATTEMPTS):
            found = await read(self.kv, state_key(game), CoordinatorState)
            if found is not None:
                return found[0]
            fresh = CoordinatorState(game=game, run_id=new_run_id(), updated_at=time.time())
            try:
                await self.kv.create(state_key(game), encode(fresh))
            except KeyWrongLastSequenceError:
                continue  # another instance created it first: read theirs
            return fresh
        raise Conflict(f"{state_key(game)}: cannot create")

    async def peek_state(self, game: str) -> CoordinatorState | None:
        """The game's state, or None when it was never written."""
        found = await read(self.kv, state_key(game), CoordinatorState)
        return found[0] if found is not None else None

    async def update(
        self, game: str, change: Callable[[CoordinatorState], CoordinatorState | None]
    ) -> CoordinatorState | None:
        """CAS ``change`` onto the state (stamped); None when ``change`` declined."""

        ended: list[bool] = [False]

        def stamped(current: CoordinatorState) -> CoordinatorState | None:
            new = change(current)
            if new is None:
                return None
            ended[0] = current.phase != "idle" and new.phase == "idle"
            return msgspec.structs.replace(new, updated_at=time.time())

        written = await cas_update(self.kv, state_key(game), CoordinatorState, stamped)
        if written is None:
            return None
        if ended[0]:  # the write that ends a generation exports its span, once
            _export_generation(written[0])
        return written[0]

    # -- champion --------------------------------------------------------------------
    async def champion(self, game: str) -> Champion | None:
        """The game's champion, if it has one."""
        found = await read(self.kv, champion_key(game), Champion)
        return found[0] if found is not None else None

    async def switch_champion(self, game: str, expected: str, new: Champion) -> bool:
        """One CAS from champion ``expected`` ("" for none) to ``new``.

        True when ``new`` is the champion afterwards (also when it already was: a
        repeated step); False when some other model holds the title.
        """
        key = champion_key(game)
        for _ in range(ATTEMPTS):
            found = await read(self.kv, key, Champion)
            try:
                if found is None:
                    if expected:
                        return False
                    await self.kv.create(key, encode(new))
                    return True
                current, revision = found
                if current.model_id == new.model_id:
                    return True
                if current.model_id != expected:
                    return False
                await self.kv.update(key, encode(new), last=revision)
                return True
            except KeyWrongLastSequenceError:
                continue
        raise Conflict(f"{key}: too many concurrent updates")

    # -- models ----------------------------------------------------------------------
    async def put_model(self, record: ModelRecord) -> None:
        """Write a model record (this service is the bucket's only writer)."""
        await self.kv.put(model_key(record.game, record.model_id), encode(record))

    async def model(self, game: str, model_id: str) -> ModelRecord | None:
        """One model record."""
        found = await read(self.kv, model_key(game, model_id), ModelRecord)
        return found[0] if found is not None else None

    async def change_model(
        self, game: str, model_id: str, change: Callable[[ModelRecord], ModelRecord | None]
    ) -> ModelRecord | None:
        """CAS ``change`` onto a model record; None when missing or unchanged."""
        written = await cas_update(self.kv, model_key(game, model_id), ModelRecord, change)
        return written[0] if written is not None else None

    async def models(self, game: str) -> list[ModelRecord]:
        """Every model record of a game, oldest first."""
        prefix = model_prefix(game)
        records = [
            decode(ModelRecord, value)
            for key, (value, _) in (await read_all(self.kv)).items()
            if key.startswith(prefix) and value
        ]
        return sorted(records, key=lambda r: (r.created_at, r.model_id))

    # -- Elo -------------------------------------------------------------------------
    async def elo(self, game: str) -> EloTable:
        """The game's Elo table (empty before the first promotion)."""
        found = await read(self.kv, elo_key(game), EloTable)
        return found[0] if found is not None else EloTable(game=game)

    async def add_elo(self, game: str, entry: EloEntry) -> None:
        """Append ``entry`` unless its model is already in the table (a repeated step)."""
        key = elo_key(game)
        for _ in range(ATTEMPTS):
            found = await read(self.kv, key, EloTable)
            table = found[0] if found is not None else EloTable(game=game)
            if any(e.model_id == entry.model_id for e in table.entries):
                return
            new = EloTable(game=game, entries=[*table.entries, entry])
            try:
                if found is None:
                    await self.kv.create(key, encode(new))
                else:
                    await self.kv.update(key, encode(new), last=found[1])
                return
            except KeyWrongLastSequenceError:
                continue
        raise Conflict(f"{key}: too many concurrent updates")


def _export_generation(state: CoordinatorState) -> None:
    """The generation's root span, training to verdict (when an exporter is set)."""
    sink, span = otel.sink(), state.span
    if sink is None or span is None:
        return
    sink.record(
        span,
        f"generation {state.game} {state.generation}",
        start=state.last_training_at or None,
        end=state.updated_at,
        attributes={
            "game": state.game,
            "generation": state.generation,
            "result": state.last_result,
        },
    )
