"""Each game's Elo curve, from the ModelRecords of the models bucket.

Every model that was ever a champion (status ``champion`` or ``archived``) is one point
(generation, Elo). A record is read once its status is final for the curve (champion,
archived or rejected: a champion only becomes archived, which moves no point), so a
refresh lists the keys and reads only the new or still-undecided models. The curves
keep at most ``max_points`` per game, the newest generations.
"""

from __future__ import annotations

from collections import Counter

import msgspec
import nats.errors
from nats.js.client import JetStreamContext
from nats.js.errors import BucketNotFoundError

from shared.kv import keys_matching, read
from shared.subjects import Subjects
from shared.training import ModelRecord

#: Statuses after which a record no longer changes what the curve shows.
_SETTLED = ("champion", "archived", "rejected")
_CROWNED = ("champion", "archived")


class EloHistory:
    """Champions' (generation, Elo) per game, refreshed incrementally."""

    def __init__(self, subjects: Subjects, *, max_points: int = 200) -> None:
        self._bucket = subjects.bucket("models")
        self.max_points = max_points
        #: game -> generation -> Elo of the champion of that generation.
        self._points: dict[str, dict[int, float]] = {}
        self._settled: set[str] = set()
        #: Games whose oldest champions were dropped for ``max_points``.
        self.trimmed: set[str] = set()
        self.reads: Counter[str] = Counter()

    def curve(self, game: str) -> list[tuple[int, float]]:
        """The game's champions, oldest generation first."""
        return sorted(self._points.get(game, {}).items())

    def games(self) -> list[str]:
        """Games with at least one champion."""
        return sorted(self._points)

    async def refresh(self, js: JetStreamContext) -> None:
        """Read the model records not read before (or not settled yet)."""
        try:
            kv = await js.key_value(self._bucket)
            keys = await keys_matching(kv, "model.>")
        except BucketNotFoundError:
            self.reads["no_bucket"] += 1  # the state manager has not made it yet
            return
        except (TimeoutError, nats.errors.Error) as exc:
            self.reads[f"failed:{type(exc).__name__}"] += 1
            return
        live = set(keys)
        # Forget keys the bucket no longer has (pruned models), so the set stays its size.
        self._settled &= live
        for key in live - self._settled:
            try:
                found = await read(kv, key, ModelRecord)
            except (TimeoutError, nats.errors.Error) as exc:
                self.reads[f"failed:{type(exc).__name__}"] += 1
                return
            except (msgspec.DecodeError, msgspec.ValidationError):
                self.reads["invalid"] += 1
                self._settled.add(key)  # a bad record stays bad: do not read it every time
                continue
            self.reads["records"] += 1
            if found is not None:
                self._take(key, found[0])
        self.reads["refreshes"] += 1

    def _take(self, key: str, record: ModelRecord) -> None:
        if record.status in _SETTLED:
            self._settled.add(key)
        if record.status not in _CROWNED:
            return
        points = self._points.setdefault(record.game, {})
        points[record.generation] = round(record.elo, 1)
        while len(points) > self.max_points:
            del points[min(points)]
            self.trimmed.add(record.game)
