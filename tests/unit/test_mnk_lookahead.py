"""The play-time three-ply check of the root moves (lookahead.py)."""

from __future__ import annotations

import numpy as np

from workloads.mnk.agents import SearchAgent
from workloads.mnk.game import Board, Game, make_game
from workloads.mnk.lookahead import allowed_roots, losing_moves
from workloads.mnk.pvnet import PvNet


def board_of(game: Game, rows: str) -> Board:
    """A board from rows of X, O and . (spaces ignored)."""
    chars = {"X": 1, "O": -1, ".": 0}
    cells = [chars[c] for c in rows if c in chars]
    assert len(cells) == game.cells
    return np.array(cells, dtype=np.int8)


def test_a_reply_setting_up_two_combinations_is_seen() -> None:
    game = make_game("5x5k4")
    # O to move. After O at 8, X at 6 has two open-three moves (18 on the diagonal
    # 0-6-12-18-24, 11 on the column 1-6-11-16-21): O cannot stop both.
    board = board_of(game, "..O.. ..... ..X.. .X... .....")
    lost = losing_moves(game, board)
    assert lost[8] and not lost.all()
    assert not (lost & (board != 0)).any()
    agent = SearchAgent(PvNet.initial(game), 64, lookahead=True)
    move = int(agent.moves(board[None, :], np.random.default_rng(0))[0])
    assert not lost[move]


def test_no_move_is_removed_from_quiet_forced_or_hopeless_roots() -> None:
    game = make_game("5x5k4")
    empty = game.empty()
    assert allowed_roots(game, empty[None, :])[0].all()
    # X to move must block at 8: the tactics decide, the check stays out.
    forced = board_of(game, "X.X.. OOO.X ..... ..... .....")
    assert not losing_moves(game, forced).any()
