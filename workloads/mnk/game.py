"""The rules of m,n,k-games: an m x n board, k stones in a row (any direction) wins.

A board is a flat ``int8`` array of ``m * n`` cells: ``1`` for the first player (X),
``-1`` for the second (O), ``0`` for empty. X moves first, so the player to move
follows from the board itself (X when both have as many stones). Every check is
vectorised over a batch of boards, because the players score all of a position's
afterstates at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache

import numpy as np
from numpy.typing import NDArray

from shared.training import MNK_GAMES

Board = NDArray[np.int8]
Boards = NDArray[np.int8]
#: Cell values: the first player's stones (X), the second's (O), nothing.
FIRST, SECOND, EMPTY = 1, -1, 0


@dataclass(frozen=True)
class Game:
    """One m,n,k config with its precomputed lines and board symmetries."""

    name: str
    m: int
    n: int
    k: int
    #: Every k-cell line on the board, shape (lines, k), as flat cell indices.
    lines: NDArray[np.intp] = field(repr=False)
    #: Cell permutations of the board's symmetries (8 when square, else 4), shape (s, cells).
    symmetries: NDArray[np.intp] = field(repr=False)
    #: Base-3 place values of the cells, for the integer key of a board.
    powers: NDArray[np.int64] = field(repr=False)

    @property
    def cells(self) -> int:
        """Number of cells on the board."""
        return self.m * self.n

    def empty(self) -> Board:
        """The starting position."""
        return np.zeros(self.cells, dtype=np.int8)

    def after(self, moves: Sequence[int]) -> Board:
        """The position after ``moves`` from the empty board, X first."""
        board = self.empty()
        for ply, cell in enumerate(moves):
            board[cell] = FIRST if ply % 2 == 0 else SECOND
        return board

    @staticmethod
    def to_move(board: Board) -> int:
        """The player to move: X when both sides have as many stones, else O."""
        return FIRST if int(np.count_nonzero(board)) % 2 == 0 else SECOND

    @staticmethod
    def legal_moves(board: Board) -> NDArray[np.intp]:
        """The empty cells, in increasing order."""
        return np.flatnonzero(board == EMPTY)

    def apply(self, board: Board, move: int) -> Board:
        """A new board with the player to move's stone on ``move`` (must be empty)."""
        if board[move] != EMPTY:
            raise ValueError(f"cell {move} is not empty")
        after = board.copy()
        after[move] = self.to_move(board)
        return after

    def wins(self, boards: Boards, player: int) -> NDArray[np.bool_]:
        """Per board of a batch (shape (b, cells)): has ``player`` k in a row?"""
        sums = boards[:, self.lines].sum(axis=2, dtype=np.int16)
        return np.asarray((sums == player * self.k).any(axis=1))

    def winner(self, board: Board) -> int:
        """``1`` or ``-1`` for a player with k in a row, else ``0``."""
        sums = board[self.lines].sum(axis=1, dtype=np.int16)
        if (sums == self.k).any():
            return FIRST
        if (sums == -self.k).any():
            return SECOND
        return EMPTY

    def terminal(self, board: Board) -> tuple[bool, int]:
        """(game over, winner): over when someone won or the board is full."""
        won = self.winner(board)
        return bool(won != EMPTY or not (board == EMPTY).any()), won

    def afterstates(self, board: Board) -> tuple[NDArray[np.intp], Boards, NDArray[np.bool_]]:
        """(legal moves, the board after each, whether that move wins at once)."""
        moves = self.legal_moves(board)
        player = self.to_move(board)
        after = np.repeat(board[None, :], len(moves), axis=0)
        after[np.arange(len(moves)), moves] = player
        # Nobody had won before this move, so any complete line is the mover's.
        return moves, after, self.wins(after, player)

    def keys(self, boards: Boards) -> NDArray[np.int64]:
        """Canonical integer key of each board: the least base-3 code over its symmetries."""
        digits = (boards[:, self.symmetries].astype(np.int64)) % 3  # -1 -> 2
        return np.asarray((digits @ self.powers).min(axis=1))

    def key(self, board: Board) -> int:
        """Canonical integer key of one board (equal for symmetric boards)."""
        return int(self.keys(board[None, :])[0])

    def from_key(self, key: int) -> Board:
        """The board a key encodes (the canonical representative)."""
        digits = (key // self.powers) % 3
        return np.where(digits == 2, -1, digits).astype(np.int8)

    def render(self, board: Board) -> str:
        """Rows of ``X``, ``O`` and ``.`` for logs and test failures."""
        chars = {FIRST: "X", SECOND: "O", EMPTY: "."}
        rows = board.reshape(self.m, self.n)
        return "\n".join("".join(chars[int(c)] for c in row) for row in rows)


def _lines(m: int, n: int, k: int) -> NDArray[np.intp]:
    grid = np.arange(m * n).reshape(m, n)
    found: list[list[int]] = []
    for dr, dc in ((0, 1), (1, 0), (1, 1), (1, -1)):
        for r in range(m):
            for c in range(n):
                cells = [(r + i * dr, c + i * dc) for i in range(k)]
                if all(0 <= rr < m and 0 <= cc < n for rr, cc in cells):
                    found.append([int(grid[rr, cc]) for rr, cc in cells])
    return np.array(found, dtype=np.intp).reshape(-1, k)


def _symmetries(m: int, n: int) -> NDArray[np.intp]:
    grid = np.arange(m * n).reshape(m, n)
    views = [grid, grid[::-1, :], grid[:, ::-1], grid[::-1, ::-1]]
    if m == n:
        views += [grid.T, grid.T[::-1, :], grid.T[:, ::-1], grid.T[::-1, ::-1]]
    return np.array([v.reshape(-1) for v in views], dtype=np.intp)


@cache
def make_game(name: str) -> Game:
    """The Game of a config name in ``MNK_GAMES`` (KeyError names the known ones)."""
    if name not in MNK_GAMES:
        raise KeyError(f"unknown game {name!r}; known: {', '.join(sorted(MNK_GAMES))}")
    m, n, k = MNK_GAMES[name]
    return Game(
        name=name,
        m=m,
        n=n,
        k=k,
        lines=_lines(m, n, k),
        symmetries=_symmetries(m, n),
        powers=(3 ** np.arange(m * n, dtype=np.int64)).astype(np.int64),
    )
