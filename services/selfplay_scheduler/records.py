"""What the scheduler reads from other services' buckets, and the jobs it builds from it.

Game counts come from the manifests bucket (key ``<game>``, written by the sync
planner) and champions from the models bucket (key ``champion.<game>``, written by
the training coordinator); the scheduler only reads them. A read that fails keeps the
last value seen, counted; a record that does not decode is counted and ignored.
"""

from __future__ import annotations

import logging
from collections import Counter

import msgspec
import nats.errors
from nats.js.kv import KeyValue

from services.selfplay_scheduler.config import SelfplaySchedulerConfig
from services.selfplay_scheduler.policy import GameInputs
from services.selfplay_scheduler.signals import GameSignals, Signals
from shared.jobs import JobSpec, Requirements
from shared.kv import read
from shared.training import MODEL_FILE, Champion, Manifest

log = logging.getLogger("ringmaster.selfplay_scheduler.records")


def champion_key(game: str) -> str:
    """The models bucket key of a game's champion."""
    return f"champion.{game}"


class Records:
    """Games per game and champions, refreshed from the buckets each round."""

    def __init__(self, models: KeyValue, manifests: KeyValue, counts: Counter[str]) -> None:
        self.models = models
        self.manifests = manifests
        self.counts = counts
        self.games: dict[str, int] = {}
        self.champions: dict[str, Champion] = {}

    async def refresh(self, games: list[str]) -> None:
        """Read every game's manifest and champion."""
        for game in games:
            try:
                manifest = await read(self.manifests, game, Manifest)
                champion = await read(self.models, champion_key(game), Champion)
            except (nats.errors.Error, TimeoutError) as exc:
                self.counts["record_reads_failed"] += 1
                log.debug("reading the records of %s failed: %r", game, exc)
                continue
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                self.counts["records_invalid"] += 1
                log.warning("a record of %s does not decode: %s", game, exc)
                continue
            self.games[game] = manifest[0].games_total if manifest else 0
            if champion is None:
                self.champions.pop(game, None)
            else:
                self.champions[game] = champion[0]

    def inputs(
        self,
        game: str,
        signals: GameSignals | None,
        *,
        now: float,
        override: float | None,
        training_stale_s: float,
    ) -> GameInputs:
        """The priority inputs of ``game`` from its records and signals."""
        sig = signals or GameSignals()
        champion = self.champions.get(game)
        moments = [t for t in (sig.refreshed_at, champion.since if champion else None) if t]
        return GameInputs(
            games_total=self.games.get(game, 0),
            staleness_s=max(0.0, now - max(moments)) if moments else None,
            elo=champion.elo if champion else None,
            in_training=sig.in_training(now, training_stale_s),
            plateau=sig.plateau,
            override=override,
        )

    def all_inputs(
        self,
        games: list[str],
        signals: Signals,
        overrides: dict[str, float],
        now: float,
        training_stale_s: float,
    ) -> dict[str, GameInputs]:
        """The priority inputs of every game."""
        return {
            game: self.inputs(
                game,
                signals.games.get(game),
                now=now,
                override=overrides.get(game),
                training_stale_s=training_stale_s,
            )
            for game in games
        }

    def spec(
        self,
        game: str,
        cfg: SelfplaySchedulerConfig,
        round_no: int,
        index: int,
        seed: int,
        games: int,
    ) -> JobSpec:
        """The selfplay job ``index`` of submit round ``round_no`` for ``game``."""
        champion = self.champions.get(game)
        inputs = [msgspec.structs.replace(champion.ref, name=MODEL_FILE)] if champion else []
        return JobSpec(
            type="selfplay",
            args={
                "game": game,
                "games": games,
                "seed": seed,
                "exploration": cfg.exploration,
            },
            inputs=inputs,
            requirements=Requirements(capability=cfg.capability, pooled=True),
            labels={
                "kind": "selfplay",
                "game": game,
                "model_id": champion.model_id if champion else "",
            },
            timeout_s=cfg.job_timeout_s,
            max_attempts=cfg.max_attempts,
            idempotency_key=f"selfplay-{game}-{round_no}-{index}",
        )
