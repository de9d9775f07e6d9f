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
5. None of that, and some move of P makes exactly one threat, O's forced block
   gives O no completing cell, and P then has a double threat to make: won (+1);
   only such moves are tried; likewise after two such threats (``VCF_DEPTH``): a
   victory by continuous threats. Longer chains are left to the search, whose forced
   nodes make them cheap.

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
#: Single threats before the double threat that rule 5 looks through (2: measured
#: against 1 in docs/workload.md; each level costs self-play time).
VCF_DEPTH = 1


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


def threat_pairs(game: Game, boards: Boards, player: NDArray[np.int8]) -> Mask:
    """Per board, (move, cell): would ``player``'s stone at move make cell complete a
    line next move?

    A line with k - 2 of the player's stones, no opponent stone and two empty cells
    e1, e2 turns into a threat at e2 when the player takes e1 (and at e1 for e2).
    Two overlapping lines can name the same pair, which is why this is a table of
    cells, not a count of lines.
    """
    pairs = np.zeros((len(boards), game.cells, game.cells), dtype=np.bool_)
    if game.k < 3:
        return pairs
    cells = boards[:, game.lines] * player[:, None, None]
    own = (cells == 1).sum(axis=2)
    empty = (cells == EMPTY).sum(axis=2)
    rows, line = np.nonzero((own == game.k - 2) & (empty == 2))
    if rows.size:
        members = game.lines[line]
        free = members[cells[rows, line] == EMPTY].reshape(-1, 2)
        pairs[rows, free[:, 0], free[:, 1]] = True
        pairs[rows, free[:, 1], free[:, 0]] = True
    return pairs


def threat_moves(game: Game, boards: Boards, player: NDArray[np.int8]) -> Mask:
    """Per board and cell: would ``player``'s stone there create two or more distinct
    cells that complete a line next move (a double threat)?"""
    return np.asarray(threat_pairs(game, boards, player).sum(axis=2) >= 2)


def threat_then_fork(game: Game, boards: Boards, player: NDArray[np.int8], depth: int = 2) -> Mask:
    """Per board and cell: a move making exactly one threat, whose forced block leaves
    the opponent no completing cell and ``player`` a double threat to make, directly
    or (``depth`` > 1) after up to ``depth - 1`` more such threats: a victory by
    continuous threats of at most ``depth`` single threats, then the double threat.

    For boards where ``player`` cannot win at once, has no double threat, and the
    opponent has no completing cell (the caller's rules 1, 2, 3 and 4 checked that).
    """
    pairs = threat_pairs(game, boards, player)
    rows, moves = np.nonzero(pairs.sum(axis=2) == 1)
    out = np.zeros(boards.shape, dtype=np.bool_)
    if rows.size == 0:
        return out
    blocks = pairs[rows, moves].argmax(axis=1)
    after = boards[rows].copy()
    mover = player[rows]
    after[np.arange(len(rows)), moves] = mover
    after[np.arange(len(rows)), blocks] = -mover
    # The block must not give the opponent a threat of its own to answer first.
    safe = ~winning_cells(game, after, -mover).any(axis=1)
    win: Mask = np.asarray(safe & threat_moves(game, after, mover).any(axis=1))
    deeper = np.flatnonzero(safe & ~win)
    if depth > 1 and deeper.size:
        # The same preconditions hold after the block: the recursion is exact too.
        chains = threat_then_fork(game, after[deeper], mover[deeper], depth - 1)
        win[deeper[chains.any(axis=1)]] = True
    out[rows[win], moves[win]] = True
    return out


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
    if free.size == 0:
        return Tactics(moves, value, decided)
    forks = threat_moves(game, boards[free], player[free])
    won = forks.any(axis=1)
    moves[free[won]] = forks[won]
    value[free[won]], decided[free[won]] = 1.0, True
    # Rule 5: a threat whose forced block leaves a double threat to make.
    rest = free[~won]
    if rest.size:
        combos = threat_then_fork(game, boards[rest], player[rest], VCF_DEPTH)
        won = combos.any(axis=1)
        moves[rest[won]] = combos[won]
        value[rest[won]], decided[rest[won]] = 1.0, True
    return Tactics(moves, value, decided)
