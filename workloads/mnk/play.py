"""Players and games: 1-ply lookahead on afterstate values, epsilon-greedy, random.

A model player scores each legal move by the position it leads to: 1 for a move that
wins at once, 0 for one that fills the board, else minus the model's value of the
afterstate (the opponent is to move there; see Model.play_values). It plays a
best-scoring move; a model with exact ties (the table) prefers among equals the move
that leaves the opponent the most ways to blunder, then its random generator decides.
In self-play (``explore``) the model ranks moves by what it may still hope for, and with
probability ``epsilon`` it plays a random move into a position it is not sure of.
``None`` in place of a model is the uniformly random player. No search beyond one ply,
and never the solver: what a player knows, it learned from games.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from workloads.mnk.game import EMPTY, Board, Boards, Game
from workloads.mnk.models import Model

#: Scores this close count as a tie.
TIE = 1e-9
#: A reply scoring this much below the best one gives away at least half a game.
BLUNDER = 0.5


def move_scores(
    game: Game, model: Model, board: Board, explore: bool = False
) -> tuple[NDArray[np.intp], NDArray[np.float64]]:
    """(legal moves, the mover's score of each)."""
    memo = model.memo
    if memo is not None:
        key = ("scores", board.tobytes(), explore)
        if key not in memo:
            memo[key] = _move_scores(game, model, board, explore)
        found: tuple[NDArray[np.intp], NDArray[np.float64]] = memo[key]
        return found
    return _move_scores(game, model, board, explore)


def _move_scores(
    game: Game, model: Model, board: Board, explore: bool
) -> tuple[NDArray[np.intp], NDArray[np.float64]]:
    moves, after, wins = game.afterstates(board)
    scores = np.where(wins, 1.0, 0.0)
    if len(moves) > 1:
        # With one empty cell left the move ends the game: a win or a draw (0).
        rest = ~wins
        if rest.any():
            scores[rest] = -model.play_values(after[rest], explore)
    return moves, scores


def score_matrix(game: Game, model: Model, boards: Boards) -> NDArray[np.float64]:
    """``move_scores`` of many positions at once, shape (b, cells); -inf where occupied."""
    rows, cells = boards.shape
    player = np.where(np.count_nonzero(boards, axis=1) % 2 == 0, 1, -1).astype(np.int8)
    after = np.repeat(boards, cells, axis=0)
    index, cell = np.arange(len(after)), np.tile(np.arange(cells), rows)
    legal = after[index, cell] == EMPTY
    after[index, cell] = np.repeat(player, cells)
    sums = after[:, game.lines].sum(axis=2, dtype=np.int16)
    wins = (sums == (np.repeat(player, cells).astype(np.int16) * game.k)[:, None]).any(axis=1)
    full = ~(after == EMPTY).any(axis=1)
    scores = np.zeros(len(after), dtype=np.float64)
    scores[wins] = 1.0
    rest = ~wins & ~full & legal
    if rest.any():
        scores[rest] = -model.play_values(after[rest])
    scores[~legal] = -np.inf
    return scores.reshape(rows, cells)


def best_moves(game: Game, model: Model, board: Board, explore: bool = False) -> NDArray[np.intp]:
    """Every move that ties for the best score and, among those, sets the most traps."""
    memo = model.memo
    if memo is not None:
        key = ("best", board.tobytes(), explore)
        if key not in memo:
            memo[key] = _best_moves(game, model, board, explore)
        found: NDArray[np.intp] = memo[key]
        return found
    return _best_moves(game, model, board, explore)


def _best_moves(game: Game, model: Model, board: Board, explore: bool) -> NDArray[np.intp]:
    moves, scores = move_scores(game, model, board, explore)
    best: NDArray[np.intp] = moves[scores >= scores.max() - TIE]
    if len(best) < 2 or len(moves) < 3 or not model.exact_ties:
        return best
    traps = np.array([pressure(game, model, game.apply(board, int(m))) for m in best])
    trappiest: NDArray[np.intp] = best[traps >= traps.max() - TIE]
    return trappiest


def pressure(game: Game, model: Model, board: Board) -> float:
    """The share of the replies in ``board`` that the model judges to be blunders.

    Among moves of equal value a player does better to leave its opponent more ways
    to go wrong; an opponent that never errs loses nothing by it.
    """
    _, scores = move_scores(game, model, board)
    return float(np.mean(scores < scores.max() - BLUNDER))


def choose(
    game: Game,
    model: Model | None,
    board: Board,
    rng: np.random.Generator,
    epsilon: float = 0.0,
    explore: bool = False,
) -> tuple[int, bool]:
    """(the move, whether it was a random exploration move); ``explore``: self-play's
    ranking of the moves (see Model.play_values)."""
    if model is None:
        return int(rng.choice(game.legal_moves(board))), False
    if epsilon > 0.0 and rng.random() < epsilon:
        # Explore where the model is unsure: a move into a settled position teaches nothing.
        moves, after, _ = game.afterstates(board)
        unsettled = ~model.settled(after)
        return int(rng.choice(moves[unsettled] if unsettled.any() else moves)), True
    best = best_moves(game, model, board, explore)
    return int(best[0] if len(best) == 1 else rng.choice(best)), False


@dataclass(frozen=True)
class Played:
    """One finished game."""

    moves: list[int]
    winner: int
    explored: list[bool]


def play_game(
    game: Game,
    x: Model | None,
    o: Model | None,
    rng: np.random.Generator,
    *,
    epsilon: float = 0.0,
    explore: bool = False,
    opening: Sequence[int] = (),
) -> Played:
    """Play X against O from the empty board; ``opening`` moves are played first, as given."""
    board = game.empty()
    moves: list[int] = []
    explored: list[bool] = []
    player = 1
    while True:
        if len(moves) < len(opening):
            move, random_move = int(opening[len(moves)]), True
        else:
            model = x if player == 1 else o
            move, random_move = choose(game, model, board, rng, epsilon, explore)
        board[move] = player
        moves.append(move)
        explored.append(random_move)
        if game.wins(board[None, :], player)[0]:
            return Played(moves, player, explored)
        if not (board == EMPTY).any():
            return Played(moves, 0, explored)
        player = -player
