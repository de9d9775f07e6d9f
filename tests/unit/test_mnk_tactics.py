"""The search's exact tactical layer: wins in one, forced blocks, double threats."""

from __future__ import annotations

import numpy as np

from workloads.mnk.agents import evaluator_of
from workloads.mnk.game import Board, Game, make_game
from workloads.mnk.mcts import SearchSettings, search, to_move
from workloads.mnk.pvnet import PvNet
from workloads.mnk.tactics import tactics, threat_moves


def board_of(game: Game, rows: str) -> Board:
    """A board from rows of X, O and . (spaces ignored)."""
    chars = {"X": 1, "O": -1, ".": 0}
    cells = [chars[c] for c in rows if c in chars]
    assert len(cells) == game.cells
    return np.array(cells, dtype=np.int8)


def decide(game: Game, board: Board) -> tuple[list[int], float, bool]:
    """(moves tried, value, decided) of one board, the player to move from the board."""
    found = tactics(game, board[None, :], to_move(board[None, :]))
    return np.flatnonzero(found.moves[0]).tolist(), float(found.value[0]), bool(found.decided[0])


def visits_of(game: Game, board: Board, simulations: int) -> np.ndarray:
    """Root visit counts of an untrained network's search (uniform priors, values 0)."""
    settings = SearchSettings(simulations=simulations)
    visits, _ = search(game, evaluator_of(PvNet.initial(game)), board[None, :], settings)
    return visits[0]


def test_a_win_in_one_decides_and_narrows_the_moves() -> None:
    game = make_game("5x5k4")
    assert decide(game, board_of(game, "XXX.O OO... ..... ..... .....")) == ([3], 1.0, True)


def test_one_threat_forces_the_block_and_two_lose() -> None:
    game = make_game("5x5k4")
    # X to move; O completes the second row at 8: the only move tried, value undecided.
    one = board_of(game, "X.X.. OOO.X ..... ..... .....")
    assert decide(game, one) == ([8], 0.0, False)
    np.testing.assert_array_equal(np.flatnonzero(visits_of(game, one, 32)), [8])
    # O to move; X completes the first column at 15 and the fourth row at 15 or 19.
    two = board_of(game, "X..O. X...O XO... .XXX. ..O.O")
    moves, value, decided = decide(game, two)
    assert (value, decided) == (-1.0, True) and set(moves) == {15, 19}


def test_a_double_threat_is_a_forced_win() -> None:
    game = make_game("5x5k4")
    # X to move: X at 1 makes .XXX. on the first row, threats at 0 and 4.
    board = board_of(game, "..XX. O.... ..... ..... O....")
    assert decide(game, board) == ([1], 1.0, True)
    assert int(visits_of(game, board, 16).argmax()) == 1
    # k = 3 (4x4k3): X at 5 makes XX. on the second row and .XX / XX. on the second column.
    small = make_game("4x4k3")
    fork = board_of(small, ".... X... .X.. O..O")
    forks = threat_moves(small, fork[None, :], np.array([1], dtype=np.int8))[0]
    assert forks[5]


def test_overlapping_lines_naming_one_threat_are_not_a_double_threat() -> None:
    game = make_game("5x5k4")
    # X..XX: X at 1 or 2 leaves one completing cell (the other), counted once.
    board = board_of(game, "X..XX ..... ..... ..... .....")
    assert not threat_moves(game, board[None, :], np.array([1], dtype=np.int8)).any()


def test_the_search_avoids_allowing_a_double_threat() -> None:
    game = make_game("5x5k4")
    # X to move; O's .OO.. on the third row becomes .OOO. at 13 (threats 10 and 14)
    # unless X takes 10, 13 or 14 now. Every other move loses by force.
    board = board_of(game, "X.... ..... .OO.. ..... ....X")
    o_forks = threat_moves(game, board[None, :], np.array([-1], dtype=np.int8))[0]
    assert o_forks[13]
    assert int(visits_of(game, board, 200).argmax()) in {10, 13, 14}
