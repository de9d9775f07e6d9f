"""Matches between two players: paired openings, both colours, tallies from one side.

An evaluation between two models is only as good as the positions it visits. Two
strong models playing greedily from the empty board repeat the same few games, so
every pair of games here starts from an opening: random moves, or, between two
models, a position where one of them judges the other's choice to be a blunder. The
pair is played once with each colour, so an opening that favours one side favours
both players equally.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from shared.sprt import Tally as Counts
from workloads.mnk.game import Board, Boards, Game
from workloads.mnk.models import Model
from workloads.mnk.play import BLUNDER, TIE, best_moves, move_scores, play_game, score_matrix

#: Informative positions an opening is picked from (see disagreement_opening).
ENOUGH = 6


def random_opening(game: Game, plies: int, rng: np.random.Generator) -> list[int]:
    """``plies`` distinct random cells (too few stones for anyone to have won)."""
    plies = min(plies, 2 * game.k - 2, game.cells - 1)
    return [int(c) for c in rng.choice(game.cells, size=plies, replace=False)]


def disagreement_opening(
    game: Game, a: Model, b: Model, rng: np.random.Generator, *, fallback: int, tries: int = 16
) -> list[int]:
    """Random moves up to a position where ``a`` or ``b`` thinks the other would blunder.

    Where two models agree their games tell little; a match opened where one expects
    the other to go wrong shows whose judgement is right, and the pair of games (one
    with each colour) lets each model make its choice there once. ``tries`` walks of
    random moves from the empty board to the end of a game collect the informative
    positions they pass (stopping once there are ``ENOUGH``); one of the distinct ones
    is picked at random, so the few shallow positions do not crowd out the many deep
    ones. Without any, a random opening of ``fallback`` plies.
    """
    found: dict[int, list[int]] = {}
    batch = not (a.exact_ties or b.exact_ties)
    for _ in range(tries):
        if len(found) >= ENOUGH:
            break
        moves, boards = _random_walk(game, rng)
        if batch:
            # Networks: judge the whole walk in two batched passes, not position by position.
            flags = informative_batch(game, a, b, np.stack(boards))
        else:
            flags = np.array([informative(game, a, b, board) for board in boards])
        for i in np.flatnonzero(flags):
            found.setdefault(game.key(boards[i]), moves[:i])
    if found:
        return list(found.values())[int(rng.integers(len(found)))]
    return random_opening(game, fallback, rng)


def _random_walk(game: Game, rng: np.random.Generator) -> tuple[list[int], list[Board]]:
    """Random moves to the end of a game, and the position before each of them."""
    board, moves, boards = game.empty(), list[int](), list[Board]()
    while not game.terminal(board)[0]:
        boards.append(board.copy())
        move = int(rng.choice(game.legal_moves(board)))
        board[move] = game.to_move(board)
        moves.append(move)
    return moves, boards


def informative_batch(game: Game, a: Model, b: Model, boards: Boards) -> NDArray[np.bool_]:
    """``informative`` for many positions, from two score matrices (ties: no trap search)."""
    score_a, score_b = score_matrix(game, a, boards), score_matrix(game, b, boards)
    best_a, best_b = score_a.max(axis=1), score_b.max(axis=1)
    chosen_a = score_a >= best_a[:, None] - TIE
    chosen_b = score_b >= best_b[:, None] - TIE
    # How each judges the worst of the other's choices.
    a_on_b = np.where(chosen_b, score_a, np.inf).min(axis=1)
    b_on_a = np.where(chosen_a, score_b, np.inf).min(axis=1)
    blunder = (a_on_b < best_a - BLUNDER) | (b_on_a < best_b - BLUNDER)
    bounds = np.stack([a.bounds(boards), b.bounds(boards)])
    proven = ((bounds[:, :, 0] > 0.5) | (bounds[:, :, 1] < -0.5)).any(axis=0)
    return np.asarray(blunder & ~proven)


def informative(game: Game, a: Model, b: Model, board: Board) -> bool:
    """One model judges a move the other would choose here to be a blunder, and neither
    has proven the position won or lost (where both would just play it out)."""
    bounds = np.concatenate([a.bounds(board[None, :]), b.bounds(board[None, :])])
    if (bounds[:, 0] > 0.5).any() or (bounds[:, 1] < -0.5).any():
        return False
    moves, score_a = move_scores(game, a, board)
    _, score_b = move_scores(game, b, board)
    best_a, best_b = _best(game, a, board, score_a), _best(game, b, board, score_b)
    # Both score arrays follow the order of ``moves``; a blunder costs at least BLUNDER.
    return bool(
        score_a[np.isin(moves, best_b)].min() < score_a.max() - BLUNDER
        or score_b[np.isin(moves, best_a)].min() < score_b.max() - BLUNDER
    )


def _best(game: Game, model: Model, board: Board, scores: NDArray[np.float64]) -> NDArray[np.intp]:
    if model.exact_ties:
        return best_moves(game, model, board)
    best: NDArray[np.intp] = game.legal_moves(board)[scores >= scores.max() - TIE]
    return best


@dataclass
class Tally:
    """Results from one side's point of view (``by_colour``: the same, split by colour)."""

    wins: int = 0
    losses: int = 0
    draws: int = 0
    by_colour: dict[str, list[int]] = field(
        default_factory=lambda: {"as_x": [0, 0, 0], "as_o": [0, 0, 0]}
    )
    #: (side, opening) of every lost game whose opening the match recorded.
    lost: list[tuple[int, list[int]]] = field(default_factory=list)

    @property
    def games(self) -> int:
        """Games counted."""
        return self.wins + self.losses + self.draws

    def add(self, winner: int, side: int) -> None:
        """Count a game's winner (1, -1, 0) for the player of ``side``."""
        column = 2 if winner == 0 else 0 if winner == side else 1
        if winner == 0:
            self.draws += 1
        elif winner == side:
            self.wins += 1
        else:
            self.losses += 1
        self.by_colour["as_x" if side == 1 else "as_o"][column] += 1

    def as_dict(self) -> dict[str, int]:
        """Counts as plain numbers."""
        return {"games": self.games, "wins": self.wins, "losses": self.losses, "draws": self.draws}

    def counts(self) -> Counts:
        """The counts as the SPRT reads them (``shared.sprt``)."""
        return Counts(self.wins, self.losses, self.draws)


def match(
    game: Game,
    player: Model | None,
    opponent: Model | None,
    games: int,
    seed: int,
    *,
    opening_plies: int = 0,
    disagreements: bool = False,
    stop: Callable[[Tally, int], bool] | None = None,
    progress: Callable[[int], None] | None = None,
) -> Tally:
    """``player`` against ``opponent``, colours alternating, counted from ``player``'s side.

    Games come in pairs that share an opening, one with each colour, so neither side
    gains from a lucky opening: ``opening_plies`` random moves, or with
    ``disagreements`` (two models) a position where the two would move differently.
    Each game has its own generator (from the seed and its number), so a game's course
    does not depend on when the match stopped. ``stop(tally, games_left)`` may end the
    match after any pair.
    """
    tally = Tally()
    opening: list[int] = []
    for i in range(games):
        rng = np.random.default_rng([seed, i])
        if i % 2 == 0:
            pick = np.random.default_rng([seed, i, 1])
            if disagreements and player is not None and opponent is not None:
                opening = disagreement_opening(game, player, opponent, pick, fallback=opening_plies)
            else:
                opening = random_opening(game, opening_plies, pick)
        side = 1 if i % 2 == 0 else -1
        x, o = (player, opponent) if side == 1 else (opponent, player)
        tally.add(play_game(game, x, o, rng, opening=opening).winner, side)
        if progress is not None:
            progress(i + 1)
        if i % 2 == 1 and stop is not None and stop(tally, games - i - 1):
            break
    return tally
