"""The manifests bucket (this service is its one writer): one Manifest per game.

Every change is a compare-and-set on the game's key, created when missing, so two
writers (a redelivered event racing retention, or two instances) never overwrite
each other. A summary of every manifest written or read is kept for health.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Set

import msgspec
from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from services.sync_planner import policy
from services.sync_planner.references import values
from shared.codec import decode, encode
from shared.errors import Conflict
from shared.kv import cas_update, read
from shared.training import Manifest, ManifestEntry, games_held


class ManifestStore:
    """Reads and compare-and-set writes of the manifests bucket."""

    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv
        self.summary: dict[str, dict[str, int]] = {}
        self.counts: Counter[str] = Counter()

    def _seen(self, manifest: Manifest) -> Manifest:
        self.summary[manifest.game] = {
            "entries": len(manifest.entries),
            "games": games_held(manifest.entries),
            "games_total": manifest.games_total,
        }
        return manifest

    async def get(self, game: str) -> Manifest:
        """The game's manifest (an empty one when it has no data yet)."""
        found = await read(self.kv, game, Manifest)
        return self._seen(found[0]) if found else Manifest(game=game)

    async def all(self) -> list[Manifest]:
        """Every manifest, by game name."""
        manifests: list[Manifest] = []
        for key, raw in await values(self.kv):
            try:
                manifests.append(self._seen(decode(Manifest, raw)))
            except (msgspec.DecodeError, msgspec.ValidationError):
                # Only this service writes the bucket: a bad value is a bug to see.
                self.counts["undecodable"] += 1
                self.summary.pop(key, None)
        return sorted(manifests, key=lambda m: m.game)

    async def append(self, game: str, entry: ManifestEntry) -> Manifest | None:
        """Add ``entry`` to the game's manifest; None when its job is already there."""
        for _ in range(5):
            duplicate = False

            def change(manifest: Manifest) -> Manifest | None:
                nonlocal duplicate
                new = policy.appended(manifest, entry, time.time())
                duplicate = new is None
                return new

            written = await cas_update(self.kv, game, Manifest, change)
            if written is not None:
                return self._seen(written[0])
            if duplicate:
                self.counts["duplicates"] += 1
                return None
            first = Manifest(
                game=game, entries=[entry], games_total=entry.games, updated_at=time.time()
            )
            try:
                await self.kv.create(game, encode(first))
            except KeyWrongLastSequenceError:
                continue  # created meanwhile by another writer: append to that one
            return self._seen(first)
        raise Conflict(f"manifest {game}: too many concurrent writers")

    async def remove(self, game: str, job_ids: Set[str]) -> Manifest | None:
        """Drop the entries of ``job_ids`` from the game's manifest."""
        written = await cas_update(
            self.kv, game, Manifest, lambda m: policy.without(m, job_ids, time.time())
        )
        return self._seen(written[0]) if written else None
