"""The coordinator's read side: the ``models`` and ``elo`` endpoints and health views."""

from __future__ import annotations

from typing import Any

from services.training_coordinator.coordinator import Coordinator
from services.training_coordinator.records import EloReply, GameModels, ModelsReply
from shared.errors import NotFound
from shared.training import GameRef


class ModelsApi:
    """Answers ``P.api.training_coordinator.models`` and ``.elo`` from the models bucket."""

    def __init__(self, coordinator: Coordinator) -> None:
        self.coordinator = coordinator

    def _games(self, ref: GameRef) -> list[str]:
        games = self.coordinator.ctx.config.games
        if not ref.game:
            return list(games)
        if ref.game not in games:
            raise NotFound(f"game {ref.game!r} is not trained here")
        return [ref.game]

    async def models(self, ref: GameRef) -> ModelsReply:
        """Champion, models and cycle state of one game (or all, for an empty ref)."""
        store = self.coordinator.ctx.store
        return ModelsReply(
            games=[
                GameModels(
                    game=game,
                    champion=await store.champion(game),
                    models=await store.models(game),
                    state=await store.peek_state(game),
                )
                for game in self._games(ref)
            ]
        )

    async def elo(self, ref: GameRef) -> EloReply:
        """The Elo history of one game (or all, for an empty ref)."""
        store = self.coordinator.ctx.store
        return EloReply(tables=[await store.elo(game) for game in self._games(ref)])


def game_details(coordinator: Coordinator, game: str, error: str) -> dict[str, Any]:
    """One game's line in health details, from what the last tick saw."""
    state = coordinator.states.get(game)
    champion = coordinator.champions.get(game)
    ready = coordinator.trainer.readiness.get(game)
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
