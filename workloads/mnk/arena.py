"""Matches between agents, many games at once: paired random openings, both colours.

The games of a batch advance one ply at a time; at each ply the boards are split by
which agent is to move and each agent moves all of its boards in one call (for the
search agent: one batched search). Games come in pairs sharing a random opening, one
with each colour, so an opening that favours a side favours both agents equally.
Openings and generators come from the seed and the games' numbers: a match is
reproducible.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from numpy.typing import NDArray

from workloads.mnk.agents import Agent
from workloads.mnk.game import EMPTY, Game
from workloads.mnk.match import Tally, random_opening

#: Games a match plays together before it may stop (see ``duel``): the coordinator's
#: evaluation batch, so its batches are played in one go.
CHUNK = 40


def play_games(
    game: Game,
    x: list[Agent],
    o: list[Agent],
    openings: list[list[int]],
    rngs: list[np.random.Generator],
) -> NDArray[np.int8]:
    """Winners (1, -1, 0) of games ``x[i]`` against ``o[i]`` after ``openings[i]``."""
    count = len(x)
    boards = np.stack([game.after(opening) for opening in openings])
    winners = np.zeros(count, dtype=np.int8)
    alive = np.ones(count, dtype=np.bool_)
    agents = {id(a): a for a in (*x, *o)}
    while alive.any():
        live = np.flatnonzero(alive)
        stones = np.count_nonzero(boards[live], axis=1)
        player = np.where(stones % 2 == 0, 1, -1).astype(np.int8)
        seats = zip(live, player, strict=True)
        owner = np.array([id(x[i]) if p == 1 else id(o[i]) for i, p in seats])
        moves = np.empty(len(live), dtype=np.intp)
        for key, agent in agents.items():
            mine = np.flatnonzero(owner == key)
            if mine.size:
                # One generator per agent call: the first game's, advanced by its use.
                moves[mine] = agent.moves(boards[live[mine]], rngs[int(live[mine[0]])])
        if (boards[live, moves] != EMPTY).any():
            raise RuntimeError("an agent played on an occupied cell")
        boards[live, moves] = player
        won = game.wins(boards[live], 1) | game.wins(boards[live], -1)
        full = ~(boards[live] == EMPTY).any(axis=1)
        winners[live[won]] = player[won]
        alive[live[won | full]] = False
    return winners


def duel(
    game: Game,
    player: Agent,
    opponent: Agent,
    games: int,
    seed: int,
    *,
    opening_plies: int,
    openings: Sequence[list[int]] | None = None,
    stop: Callable[[Tally, int], bool] | None = None,
    progress: Callable[[int], None] | None = None,
) -> Tally:
    """``player`` against ``opponent``, counted from ``player``'s side.

    Pairs of games (player as X, then as O) share an opening: ``openings[pair]``
    when given (one per pair, at least ``games / 2`` of them), else
    ``opening_plies`` random moves. Games are played ``CHUNK`` at a time; after
    each chunk ``stop(tally, games_left)`` may end the match.
    """
    if openings is not None and len(openings) < (games + 1) // 2:
        raise ValueError(f"{len(openings)} openings for {games} games; one per pair is needed")
    tally = Tally()
    done = 0
    while done < games:
        count = min(CHUNK, games - done)
        index = range(done, done + count)
        chosen: list[list[int]] = []
        for i in index:
            if openings is not None:
                chosen.append(list(openings[i // 2]))
                continue
            pick = np.random.default_rng([seed, i - i % 2, 1])
            chosen.append(random_opening(game, opening_plies, pick))
        sides = [1 if i % 2 == 0 else -1 for i in index]
        x: list[Agent] = [player if s == 1 else opponent for s in sides]
        o: list[Agent] = [opponent if s == 1 else player for s in sides]
        rngs = [np.random.default_rng([seed, i]) for i in index]
        winners = play_games(game, x, o, chosen, rngs)
        for winner, side, opening in zip(winners, sides, chosen, strict=True):
            tally.add(int(winner), side)
            if winner == -side:
                tally.lost.append((side, opening))
        done += count
        if progress is not None:
            progress(done)
        if stop is not None and done % 2 == 0 and stop(tally, games - done):
            break
    return tally
