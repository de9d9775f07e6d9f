"""The coordinator's read side: the ``models`` and ``elo`` endpoints and health views."""

from __future__ import annotations

from typing import Any

from services.training_coordinator.coordinator import Coordinator
from services.training_coordinator.records import ConfigModels, EloReply, ModelsReply
from shared.errors import NotFound
from shared.training import ConfigRef


class ModelsApi:
    """Answers ``P.api.training_coordinator.models`` and ``.elo`` from the models bucket."""

    def __init__(self, coordinator: Coordinator) -> None:
        self.coordinator = coordinator

    def _configs(self, ref: ConfigRef) -> list[str]:
        configs = self.coordinator.ctx.config.configs
        if not ref.config:
            return list(configs)
        if ref.config not in configs:
            raise NotFound(f"config {ref.config!r} is not trained here")
        return [ref.config]

    async def models(self, ref: ConfigRef) -> ModelsReply:
        """Champion, models and cycle state of one config (or all, for an empty ref)."""
        store = self.coordinator.ctx.store
        return ModelsReply(
            configs=[
                ConfigModels(
                    config=config,
                    champion=await store.champion(config),
                    models=await store.models(config),
                    state=await store.peek_state(config),
                )
                for config in self._configs(ref)
            ]
        )

    async def elo(self, ref: ConfigRef) -> EloReply:
        """The Elo history of one config (or all, for an empty ref)."""
        store = self.coordinator.ctx.store
        return EloReply(tables=[await store.elo(config) for config in self._configs(ref)])


def config_details(coordinator: Coordinator, config: str, error: str) -> dict[str, Any]:
    """One config's line in health details, from what the last tick saw."""
    state = coordinator.states.get(config)
    champion = coordinator.champions.get(config)
    ready = coordinator.trainer.readiness.get(config)
    return {
        "phase": state.phase if state else "unknown",
        "generation": state.generation if state else 0,
        "candidate": state.candidate if state and state.phase == "evaluating" else "",
        "tally": [state.wins, state.losses, state.draws] if state else [],
        "llr": round(state.llr, 3) if state else 0.0,
        "champion": champion.model_id if champion else "",
        "champion_elo": round(champion.elo, 1) if champion else None,
        "readiness": ready.reason if ready else "",
        "last_result": state.last_result if state else "",
        "error": error,
    }
