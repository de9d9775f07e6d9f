"""Exhaustive minimax for small boards: the measuring stick, never used to learn.

``Solver.value`` is the game-theoretic value of a position for the player to move
(1 win, 0 draw, -1 loss), memoised by canonical key. ``versus_perfect`` plays a model
against perfect play from both sides and follows every branch: each of the perfect
player's optimal moves and each of the model's tied best moves, so the count does
not depend on any random tie-break. A model that never loses there cannot be beaten
by any opponent however it breaks its ties.
"""

from __future__ import annotations

import sys
from collections import deque

import numpy as np
from numpy.typing import NDArray

from workloads.mnk.game import Board, Game
from workloads.mnk.models import Model
from workloads.mnk.play import best_moves

#: Boards the solver accepts: 3^cells positions at most must stay enumerable.
MAX_CELLS = 9


class Solver:
    """Minimax values of one game's positions."""

    def __init__(self, game: Game) -> None:
        if game.cells > MAX_CELLS:
            raise ValueError(f"{game.name} is too big to solve exhaustively")
        self.game = game
        self.memo: dict[int, int] = {}
        # The deepest recursion is one frame per cell; stay clear of the default limit.
        sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * game.cells + 100))

    def value(self, board: Board) -> int:
        """Value of a non-terminal position for the player to move."""
        key = self.game.key(board)
        found = self.memo.get(key)
        if found is None:
            found = int(self.move_values(board)[1].max())
            self.memo[key] = found
        return found

    def move_values(self, board: Board) -> tuple[NDArray[np.intp], NDArray[np.int64]]:
        """(legal moves, the value of each for the mover)."""
        moves, after, wins = self.game.afterstates(board)
        values = np.zeros(len(moves), dtype=np.int64)
        for i in range(len(moves)):
            if wins[i]:
                values[i] = 1
            elif len(moves) > 1:
                values[i] = -self.value(after[i])
        return moves, values

    def optimal_moves(self, board: Board) -> NDArray[np.intp]:
        """Every move that keeps the position's value."""
        moves, values = self.move_values(board)
        optimal: NDArray[np.intp] = moves[values == values.max()]
        return optimal


Counts = tuple[int, int, int]


def versus_perfect(model: Model, solver: Solver) -> dict[str, dict[str, int]]:
    """Game counts (paths through all branches) of the model against perfect play."""
    result: dict[str, dict[str, int]] = {}
    for side, name in ((1, "as_x"), (-1, "as_o")):
        w, d, l_ = _explore(model, solver, solver.game.empty(), side, {})
        result[name] = {"games": w + d + l_, "wins": w, "draws": d, "losses": l_}
    return result


def _explore(
    model: Model, solver: Solver, board: Board, side: int, memo: dict[bytes, Counts]
) -> Counts:
    """(wins, draws, losses) of the model, playing ``side``, over every branch from here."""
    key = board.tobytes()
    if key in memo:
        return memo[key]
    game = solver.game
    if game.to_move(board) == side:
        choices = best_moves(game, model, board)
    else:
        choices = solver.optimal_moves(board)
    wins = draws = losses = 0
    for move in choices:
        after = game.apply(board, int(move))
        over, winner = game.terminal(after)
        if over:
            wins += winner == side
            losses += winner == -side
            draws += winner == 0
        else:
            w, d, l_ = _explore(model, solver, after, side, memo)
            wins, draws, losses = wins + w, draws + d, losses + l_
    memo[key] = (wins, draws, losses)
    return memo[key]


def optimal_share(model: Model, solver: Solver) -> tuple[int, int]:
    """(positions where every tied best move of the model is optimal, positions).

    Positions are all non-terminal positions reachable in play, up to symmetry.
    """
    game = solver.game
    seen = {game.key(game.empty())}
    queue = deque([game.empty()])
    good = total = 0
    while queue:
        board = queue.popleft()
        total += 1
        good += set(best_moves(game, model, board).tolist()) <= set(
            solver.optimal_moves(board).tolist()
        )
        for move in game.legal_moves(board):
            after = game.apply(board, int(move))
            key = game.key(after)
            if key not in seen and not game.terminal(after)[0]:
                seen.add(key)
                queue.append(after)
    return good, total
