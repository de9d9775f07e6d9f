"""An exact three-ply check of the root moves at play time: which ones lose by force.

The tactical layer (``tactics.py``) decides a leaf when the player to move has a
combination ready. One ply earlier is the threat that no search of a few hundred
simulations sees in time: a move after which the opponent has a reply that sets up
two combinations at once (two open-three moves, say), so that every answer still
leaves one. At the root that is cheap to check exhaustively: every move m, every
opponent reply r, every answer s the tactics allow, and the tactics of the position
after s; m loses by force when some r leaves every s lost by the rules. Those moves
are taken out of the root's priors (unless every move loses).

Only the strength test's player uses it (``agents.SearchAgent(lookahead=True)``):
its cost, thousands of positions per root (about 6 ms), would buy fewer self-play
games, and in evaluation jobs it changed little (bench/RESULTS.md).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from workloads.mnk.game import EMPTY, Board, Boards, Game
from workloads.mnk.mcts import to_move
from workloads.mnk.tactics import Mask, tactics


def _children(boards: Boards, moves: Mask, player: int) -> tuple[NDArray[np.intp], Boards]:
    """(parent index, board) of every allowed move of ``player`` on every board."""
    rows, cells = np.nonzero(moves)
    out = boards[rows].copy()
    out[np.arange(len(rows)), cells] = player
    return rows, out


def losing_moves(game: Game, board: Board) -> Mask:
    """Per cell of one non-terminal board: does the move there lose by force within
    three plies and the tactics' horizon?"""
    me = int(to_move(board[None, :])[0])
    lost = np.zeros(game.cells, dtype=np.bool_)
    root = tactics(game, board[None, :], np.array([me], dtype=np.int8))
    if root.decided[0] or not np.array_equal(root.moves[0], board == EMPTY):
        return lost  # a decided or forced root: the tactics already chose
    _, first = _children(board[None, :], board[None, :] == EMPTY, me)
    moves = np.flatnonzero(board == EMPTY)
    # The root is not forced, so no m leaves the opponent a completing cell; an m that
    # fills the board draws.
    live = (first == EMPTY).any(axis=1)
    second_rows, second = _children(first, (first == EMPTY) & live[:, None], -me)
    mine = np.full(len(second), me, dtype=np.int8)
    # No reply completes a line (see above); one may fill the board: a draw.
    over = ~(second == EMPTY).any(axis=1)
    found = tactics(game, second, mine)
    refutes = ~over & found.decided & (found.value < 0)
    open_ = np.flatnonzero(~over & ~found.decided)
    if open_.size:
        third_rows, third = _children(second[open_], found.moves[open_], me)
        theirs = np.full(len(third), -me, dtype=np.int8)
        full = ~(third == EMPTY).any(axis=1)
        after = tactics(game, third, theirs)
        saved = full | ~after.decided | (after.value < 0)
        # A reply refutes m when no allowed answer is saved.
        has_save = np.zeros(len(open_), dtype=np.bool_)
        np.logical_or.at(has_save, third_rows, saved)
        refutes[open_] = ~has_save
    hit = np.zeros(len(first), dtype=np.bool_)
    np.logical_or.at(hit, second_rows, refutes)
    lost[moves[hit]] = True
    if lost[moves].all():
        lost[:] = False  # every move loses: let the search pick the longest resistance
    return lost


def allowed_roots(game: Game, boards: Boards) -> Mask:
    """Per board and cell: a legal move not found losing by ``losing_moves``."""
    allowed: Mask = np.asarray(boards == EMPTY)
    for i, board in enumerate(boards):
        allowed[i] &= ~losing_moves(game, board)
    return allowed
