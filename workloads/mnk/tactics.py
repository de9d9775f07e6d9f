"""The exact tactical layer of the search: wins in one, forced blocks, double threats.

Where the rules alone decide a position a few plies ahead, the search should not
have to discover it by sampling, and the network should not have to learn it. At a
leaf with player P to move and opponent O, checked in this order:

1. P can complete a line now: the position is won (+1); only those cells are tried.
2. O has two or more distinct cells completing a line: P can block one at most, so
   the position is lost (-1); only the blocks are tried (each loses).
3. O has exactly one such cell: P must play there; it is the only move tried, the
   value stays the network's.
4. O has none, and some move of P creates two distinct completing cells for P (a
   double threat: an open three ``.XXX.`` on a k=4 board, a fork on k=3): O cannot
   complete a line in reply and cannot block both, so the position is won (+1); only
   such moves are tried.

Every rule is exact (a finite, forced sequence), so the values are never wrong; the
move restrictions prune only moves that lose or that are no better than the kept ones.
All of it is numpy over a batch of boards.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from workloads.mnk.game import EMPTY, Boards, Game

Mask = NDArray[np.bool_]


def winning_cells(game: Game, boards: Boards, player: NDArray[np.int8]) -> Mask:
    """Per board and cell: would ``player``'s stone there complete k in a row?

    A line summing to (k - 1) * player holds k - 1 of that player's stones and one
    empty cell: that cell wins.
    """
    sums = boards[:, game.lines].sum(axis=2, dtype=np.int16)
    hot = sums == (player.astype(np.int16) * (game.k - 1))[:, None]
    rows, line = np.nonzero(hot)
    cells = game.lines[line]
    empty = boards[rows[:, None], cells] == EMPTY
    out = np.zeros(boards.shape, dtype=np.bool_)
    out[np.repeat(rows, game.k)[empty.reshape(-1)], cells[empty]] = True
    return out


def threat_moves(game: Game, boards: Boards, player: NDArray[np.int8]) -> Mask:
    """Per board and cell: would ``player``'s stone there create two or more distinct
    cells that complete a line next move (a double threat)?

    A line with k - 2 of the player's stones, no opponent stone and two empty cells
    e1, e2 turns into a threat at e2 when the player takes e1 (and at e1 for e2). The
    (move, threat) pairs of all such lines go into a (board, cell, cell) table; a move
    is a double threat when its row holds two cells. Two overlapping lines can name
    the same pair, which is why the table counts distinct cells, not lines.
    """
    if game.k < 3:
        return np.zeros(boards.shape, dtype=np.bool_)
    cells = boards[:, game.lines] * player[:, None, None]
    own = (cells == 1).sum(axis=2)
    empty = (cells == EMPTY).sum(axis=2)
    rows, line = np.nonzero((own == game.k - 2) & (empty == 2))
    pairs = np.zeros((len(boards), game.cells, game.cells), dtype=np.bool_)
    if rows.size:
        members = game.lines[line]
        free = members[cells[rows, line] == EMPTY].reshape(-1, 2)
        pairs[rows, free[:, 0], free[:, 1]] = True
        pairs[rows, free[:, 1], free[:, 0]] = True
    return np.asarray(pairs.sum(axis=2) >= 2)


@dataclass(frozen=True)
class Tactics:
    """What the rules decide about a batch of positions (see the module doc)."""

    #: The moves worth trying (all legal moves where no rule applies).
    moves: Mask
    #: +1 won, -1 lost, 0 where the rules do not decide (see ``decided``).
    value: NDArray[np.float32]
    decided: Mask


def tactics(game: Game, boards: Boards, player: NDArray[np.int8]) -> Tactics:
    """The tactical rules for non-terminal ``boards`` with ``player`` to move."""
    legal = boards == EMPTY
    moves = legal.copy()
    value = np.zeros(len(boards), dtype=np.float32)
    decided = np.zeros(len(boards), dtype=np.bool_)
    wins = winning_cells(game, boards, player)
    can_win = wins.any(axis=1)
    moves[can_win], value[can_win], decided[can_win] = wins[can_win], 1.0, True
    rest = np.flatnonzero(~can_win)
    if rest.size == 0:
        return Tactics(moves, value, decided)
    # Rules 2 and 3: the opponent's completing cells must be blocked.
    blocks = winning_cells(game, boards[rest], -player[rest])
    count = blocks.sum(axis=1)
    must = rest[count > 0]
    moves[must] = blocks[count > 0]
    lost = rest[count >= 2]
    value[lost], decided[lost] = -1.0, True
    # Rule 4: nothing to block, and a double threat to make.
    free = rest[count == 0]
    if free.size:
        forks = threat_moves(game, boards[free], player[free])
        won = forks.any(axis=1)
        moves[free[won]] = forks[won]
        value[free[won]], decided[free[won]] = 1.0, True
    return Tactics(moves, value, decided)
