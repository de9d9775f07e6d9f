"""What the scheduler reads from other services' buckets, and the jobs it builds from it.

Game counts come from the manifests bucket (key ``<config>``, written by the sync
planner) and champions from the models bucket (key ``champion.<config>``, written by
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
from services.selfplay_scheduler.policy import ConfigInputs
from services.selfplay_scheduler.signals import ConfigSignals, Signals
from shared.jobs import JobSpec, Requirements
from shared.kv import read
from shared.training import MODEL_FILE, Champion, Manifest

log = logging.getLogger("ringmaster.selfplay_scheduler.records")


def champion_key(config: str) -> str:
    """The models bucket key of a config's champion."""
    return f"champion.{config}"


class Records:
    """Games per config and champions, refreshed from the buckets each round."""

    def __init__(self, models: KeyValue, manifests: KeyValue, counts: Counter[str]) -> None:
        self.models = models
        self.manifests = manifests
        self.counts = counts
        self.games: dict[str, int] = {}
        self.champions: dict[str, Champion] = {}

    async def refresh(self, configs: list[str]) -> None:
        """Read every config's manifest and champion."""
        for config in configs:
            try:
                manifest = await read(self.manifests, config, Manifest)
                champion = await read(self.models, champion_key(config), Champion)
            except (nats.errors.Error, TimeoutError) as exc:
                self.counts["record_reads_failed"] += 1
                log.debug("reading the records of %s failed: %r", config, exc)
                continue
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                self.counts["records_invalid"] += 1
                log.warning("a record of %s does not decode: %s", config, exc)
                continue
            self.games[config] = manifest[0].games_total if manifest else 0
            if champion is None:
                self.champions.pop(config, None)
            else:
                self.champions[config] = champion[0]

    def inputs(
        self,
        config: str,
        signals: ConfigSignals | None,
        *,
        now: float,
        override: float | None,
        training_stale_s: float,
    ) -> ConfigInputs:
        """The priority inputs of ``config`` from its records and signals."""
        sig = signals or ConfigSignals()
        champion = self.champions.get(config)
        moments = [t for t in (sig.refreshed_at, champion.since if champion else None) if t]
        return ConfigInputs(
            games_total=self.games.get(config, 0),
            staleness_s=max(0.0, now - max(moments)) if moments else None,
            elo=champion.elo if champion else None,
            in_training=sig.in_training(now, training_stale_s),
            plateau=sig.plateau,
            override=override,
        )

    def all_inputs(
        self,
        configs: list[str],
        signals: Signals,
        overrides: dict[str, float],
        now: float,
        training_stale_s: float,
    ) -> dict[str, ConfigInputs]:
        """The priority inputs of every config."""
        return {
            config: self.inputs(
                config,
                signals.configs.get(config),
                now=now,
                override=overrides.get(config),
                training_stale_s=training_stale_s,
            )
            for config in configs
        }

    def spec(
        self,
        config: str,
        cfg: SelfplaySchedulerConfig,
        round_no: int,
        index: int,
        seed: int,
        games: int,
    ) -> JobSpec:
        """The selfplay job ``index`` of submit round ``round_no`` for ``config``."""
        champion = self.champions.get(config)
        inputs = [msgspec.structs.replace(champion.ref, name=MODEL_FILE)] if champion else []
        return JobSpec(
            type="selfplay",
            args={
                "config": config,
                "games": games,
                "seed": seed,
                "exploration": cfg.exploration,
            },
            inputs=inputs,
            requirements=Requirements(capability=cfg.capability, pooled=True),
            labels={
                "kind": "selfplay",
                "config": config,
                "model_id": champion.model_id if champion else "",
            },
            timeout_s=cfg.job_timeout_s,
            max_attempts=cfg.max_attempts,
            idempotency_key=f"selfplay-{config}-{round_no}-{index}",
        )
