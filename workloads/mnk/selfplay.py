"""Self-play with search: many games at once, one batched search per ply.

Before each move of every game the searcher runs ``simulations`` PUCT simulations
from the position, with Dirichlet noise on the root priors; the root's visit counts
are the policy target of that position. For the first ``sample_plies`` plies the move
is drawn in proportion to the visit counts (variety of openings), later the most
visited move is played. Games are played ``batch`` at a time: a fixed batch keeps the
time of a job proportional to its number of games, which the scheduler relies on when
it sizes jobs by duration.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from workloads.mnk.agents import SIMULATIONS, evaluator_of, pick_most_visited
from workloads.mnk.data import Games
from workloads.mnk.game import EMPTY, Game
from workloads.mnk.mcts import Evaluator, SearchSettings, search
from workloads.mnk.models import Model

#: Plies whose move is drawn from the visit counts, per config (then: most visited).
SAMPLE_PLIES = {"4x4k3": 4, "5x5k4": 2}
#: Dirichlet concentration at the roots: about 10 / the typical number of legal moves.
NOISE_ALPHA = {"4x4k3": 0.6, "5x5k4": 0.4}


@dataclass(frozen=True)
class SelfplaySettings:
    """A self-play job's search and batching."""

    simulations: int
    sample_plies: int
    noise_weight: float
    noise_alpha: float
    batch: int = 64

    @classmethod
    def of(cls, config: str, noise_weight: float, simulations: int = 0) -> SelfplaySettings:
        """The config's defaults; ``simulations`` 0 keeps the config's own count."""
        return cls(
            simulations=simulations or SIMULATIONS.get(config, 64),
            sample_plies=SAMPLE_PLIES.get(config, 4),
            noise_weight=noise_weight,
            noise_alpha=NOISE_ALPHA.get(config, 0.5),
        )


def play_searched(
    game: Game,
    model: Model,
    model_id: str,
    games: int,
    seed: int,
    settings: SelfplaySettings,
    progress: Callable[[float], None] | None = None,
) -> Games:
    """``games`` self-play games of ``model`` with search, with their visit counts;
    ``progress`` hears the share done, several times per ply."""
    rng = np.random.default_rng(seed)
    search_settings = SearchSettings(
        simulations=settings.simulations,
        noise_alpha=settings.noise_alpha,
        noise_weight=settings.noise_weight,
    )
    evaluate = evaluator_of(model)
    records: list[tuple[list[int], int, list[bool]]] = []
    visits: list[NDArray[np.uint16]] = []
    root_values: list[NDArray[np.float32]] = []
    while len(records) < games:
        count = min(settings.batch, games - len(records))
        done = len(records)

        def report(share: float, done: int = done, count: int = count) -> None:
            if progress is not None:
                progress((done + count * share) / games)

        moves, counts, values, winners = _play_chunk(
            game, evaluate, count, settings.sample_plies, search_settings, rng, report
        )
        for i in range(count):
            length = int((moves[i] >= 0).sum())
            explored = [t < settings.sample_plies for t in range(length)]
            records.append(([int(m) for m in moves[i, :length]], int(winners[i]), explored))
            visits.append(counts[i, :length])
            root_values.append(values[i, :length])
    return Games.build(game, model_id, records, visits, root_values)


def _play_chunk(
    game: Game,
    evaluate: Evaluator,
    count: int,
    sample_plies: int,
    settings: SearchSettings,
    rng: np.random.Generator,
    report: Callable[[float], None],
) -> tuple[NDArray[np.intp], NDArray[np.uint16], NDArray[np.float32], NDArray[np.int8]]:
    """(moves padded with -1, root visit counts, root values, winners) of ``count``
    games played together; ``report`` hears the share of the chunk done."""
    moves = np.full((count, game.cells), -1, dtype=np.intp)
    counts = np.zeros((count, game.cells, game.cells), dtype=np.uint16)
    values = np.zeros((count, game.cells), dtype=np.float32)
    boards = np.zeros((count, game.cells), dtype=np.int8)
    winners = np.zeros(count, dtype=np.int8)
    alive = np.ones(count, dtype=np.bool_)
    ply = 0

    def tick(share: float) -> None:
        # Finished games count whole; one in play by its plies (at most 0.9 of a game).
        playing = int(alive.sum())
        report((count - playing + playing * min((ply + share) / game.cells, 0.9)) / count)

    while alive.any():
        live = np.flatnonzero(alive)
        seen, q = search(game, evaluate, boards[live], settings, rng, tick)
        move = _sample(seen, rng) if ply < sample_plies else pick_most_visited(seen, rng)
        counts[live, ply] = seen.astype(np.uint16)
        values[live, ply] = q
        moves[live, ply] = move
        player = 1 if ply % 2 == 0 else -1
        boards[live, move] = player
        won = game.wins(boards[live], player)
        full = ~(boards[live] == EMPTY).any(axis=1)
        winners[live[won]] = player
        alive[live[won | full]] = False
        ply += 1
    report(1.0)
    return moves, counts, values, winners


def _sample(visits: NDArray[np.float32], rng: np.random.Generator) -> NDArray[np.intp]:
    """A move per row drawn in proportion to its visit counts."""
    cumulative = np.cumsum(visits, axis=1)
    draw = rng.random(len(visits)) * cumulative[:, -1]
    return np.asarray((cumulative <= draw[:, None]).sum(axis=1), dtype=np.intp)
