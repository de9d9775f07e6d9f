"""Players that choose moves for many games at once: search, random, depth-2 minimax.

An agent gets a batch of non-terminal boards (every one with its own player to move)
and returns one move per board. Batching is what keeps a job's core busy: the search
agent evaluates the leaves of all its games' trees with one network call per
simulation. The depth-2 searcher is the measuring stick of the bench, never a teacher.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from workloads.mnk.game import EMPTY, Boards, Game
from workloads.mnk.mcts import Evaluator, SearchSettings, search, to_move
from workloads.mnk.models import Model

Moves = NDArray[np.intp]

#: Simulations per move in evaluation matches and in self-play, per config.
SIMULATIONS = {"4x4k3": 48, "5x5k4": 64}


class Agent(Protocol):
    """Anything that moves in a batch of games."""

    name: str

    def moves(self, boards: Boards, rng: np.random.Generator) -> Moves:
        """One legal move per (non-terminal) board."""


def evaluator_of(model: Model) -> Evaluator:
    """The search's evaluator of a model: its policy and value heads, or (a value-only
    model) uniform priors and its values."""
    from workloads.mnk.pvnet import PvNet

    if isinstance(model, PvNet):
        return model.predict

    def uniform(boards: Boards) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        legal = (boards == EMPTY).astype(np.float32)
        priors = legal / np.maximum(legal.sum(axis=1, keepdims=True), 1.0)
        return priors, model.values(boards).astype(np.float32)

    return uniform


def pick_most_visited(visits: NDArray[np.float32], rng: np.random.Generator) -> Moves:
    """The most visited move of each row, ties broken at random."""
    jitter = rng.random(visits.shape, dtype=np.float32) * 0.5  # below one visit
    return np.asarray((visits + jitter).argmax(axis=1), dtype=np.intp)


class SearchAgent:
    """PUCT search guided by a model; plays its most visited move (no noise). With
    ``lookahead`` an exact three-ply check removes root moves that lose by force first
    (lookahead.py; the strength test uses it, evaluation jobs do not: it made a small
    difference for about 3.5x the CPU at 64 simulations, bench/RESULTS.md)."""

    def __init__(
        self, model: Model, simulations: int | None = None, lookahead: bool = False
    ) -> None:
        self.model = model
        self.lookahead = lookahead
        self.name = model.model_id
        sims = simulations or SIMULATIONS.get(model.game.name, 64)
        self.settings = SearchSettings(simulations=sims)
        self.evaluate = evaluator_of(model)

    def moves(self, boards: Boards, rng: np.random.Generator) -> Moves:
        """Search every board (root moves that lose by force within three plies taken
        out first, with ``lookahead``); the most visited root move of each."""
        from workloads.mnk.lookahead import allowed_roots

        game = self.model.game
        allowed = allowed_roots(game, boards) if self.lookahead else None
        visits, _ = search(game, self.evaluate, boards, self.settings, allowed=allowed)
        return pick_most_visited(visits, rng)


class RandomAgent:
    """A uniformly random legal move."""

    name = "random"

    def moves(self, boards: Boards, rng: np.random.Generator) -> Moves:
        """A random empty cell of each board."""
        score = rng.random(boards.shape) + (boards == EMPTY)
        return np.asarray(score.argmax(axis=1), dtype=np.intp)


def open_lines(game: Game, boards: Boards, player: NDArray[np.int8]) -> NDArray[np.float64]:
    """The heuristic: ``player``'s open lines weighted by their stones, minus the
    opponent's. A line is open for a player when the other has no stone on it; one
    with c stones counts 4 ** c, so a near-complete line outweighs many sparse ones."""
    cells = boards[:, game.lines] * player[:, None, None]
    own, other = (cells == 1).sum(axis=2), (cells == -1).sum(axis=2)
    mine = np.where((other == 0) & (own > 0), 4.0**own, 0.0).sum(axis=1)
    theirs = np.where((own == 0) & (other > 0), 4.0**other, 0.0).sum(axis=1)
    return np.asarray(mine - theirs)


class MinimaxAgent:
    """Depth-2 search on the open-lines heuristic: every move, every reply.

    It takes a win in one, never allows a win in one it can prevent, and otherwise
    plays the move whose worst reply leaves it the best heuristic score, ties broken
    at random. Evaluated as a full depth-2 minimax in one numpy batch per board: the
    same choice an alpha-beta search of depth 2 makes, without the pruning.
    """

    name = "minimax-2"
    WIN = 1e9

    def __init__(self, game: Game) -> None:
        self.game = game

    def moves(self, boards: Boards, rng: np.random.Generator) -> Moves:
        """The depth-2 choice on each board."""
        return np.array([self._move(b, rng) for b in boards], dtype=np.intp)

    def _move(self, board: NDArray[np.int8], rng: np.random.Generator) -> int:
        game = self.game
        moves, after, wins = game.afterstates(board)
        if wins.any():
            return int(rng.choice(moves[wins]))
        me = to_move(board[None, :])[0]
        scores = np.empty(len(moves))
        for i, first in enumerate(after):
            replies, second, lost = game.afterstates(first)
            if lost.any():
                scores[i] = -self.WIN
            elif len(replies) == 0:
                scores[i] = 0.0
            else:
                mover = np.full(len(second), me, dtype=np.int8)
                scores[i] = open_lines(game, second, mover).min()
        best = moves[scores >= scores.max()]
        return int(rng.choice(best))
