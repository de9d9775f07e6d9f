"""The batched PUCT search and the agents built on it."""

from __future__ import annotations

import numpy as np
import pytest

from workloads.mnk.agents import MinimaxAgent, RandomAgent, SearchAgent, evaluator_of
from workloads.mnk.arena import duel
from workloads.mnk.game import Board, Boards, Game, make_game
from workloads.mnk.mcts import SearchSettings, search
from workloads.mnk.pvnet import PvNet
from workloads.mnk.tactics import winning_cells


def board_of(game: Game, rows: str) -> Board:
    """A board from rows of X, O and . (spaces ignored)."""
    chars = {"X": 1, "O": -1, ".": 0}
    cells = [chars[c] for c in rows if c in chars]
    assert len(cells) == game.cells
    return np.array(cells, dtype=np.int8)


def uniform_search(game: Game, boards: Boards, simulations: int) -> np.ndarray:
    visits, _ = search(
        game,
        evaluator_of(PvNet.initial(game)),
        boards,
        SearchSettings(simulations=simulations),
    )
    return visits


@pytest.mark.parametrize("simulations", [1, 7, 64])
def test_root_visits_sum_to_the_simulations(simulations: int) -> None:
    game = make_game("5x5k4")
    rng = np.random.default_rng(3)
    boards = np.zeros((6, game.cells), dtype=np.int8)
    for i in range(1, 6):  # a few stones each, X to move or O to move
        cells = rng.choice(game.cells, size=i, replace=False)
        boards[i, cells] = [1 if j % 2 == 0 else -1 for j in range(i)]
    visits = uniform_search(game, boards, simulations)
    np.testing.assert_array_equal(visits.sum(axis=1), simulations)
    assert (visits[boards != 0] == 0).all()  # never a visit to an occupied cell


def test_search_finds_the_win_in_one_and_the_forced_win() -> None:
    game = make_game("5x5k4")
    # X to move: four in a row is one move away, at cell 3.
    now = board_of(game, "XXX.O OO... ..... ..... .....")
    visits = uniform_search(game, now[None, :], 32)[0]
    assert int(visits.argmax()) == 3
    # X to move, no win in one; X1 makes .XXX. on the first row, two threats (0 and 4)
    # that O cannot both stop: the search must find it with an untrained network.
    forced = board_of(game, "..XX. O.... ..... ..... O....")
    visits = uniform_search(game, forced[None, :], 400)[0]
    assert int(visits.argmax()) == 1


def test_search_avoids_the_forced_loss() -> None:
    game = make_game("5x5k4")
    # X to move; O threatens to complete the second row at cell 8: X must block there.
    threat = board_of(game, "X.X.. OOO.X ..... ..... .....")
    visits = uniform_search(game, threat[None, :], 64)[0]
    assert int(visits.argmax()) == 8
    blocked = threat.copy()
    blocked[8] = 1
    assert not winning_cells(game, blocked[None, :], np.array([-1], dtype=np.int8)).any()


def test_winning_cells_are_the_completing_cells() -> None:
    game = make_game("4x4k3")
    board = board_of(game, "XX.. O... O... ....")
    wins = winning_cells(game, board[None, :], np.array([1], dtype=np.int8))
    assert sorted(np.flatnonzero(wins[0]).tolist()) == [2]
    o_wins = winning_cells(game, board[None, :], np.array([-1], dtype=np.int8))
    assert sorted(np.flatnonzero(o_wins[0]).tolist()) == [12]


def test_searching_beats_random_and_minimax_takes_its_wins() -> None:
    game = make_game("4x4k3")
    tally = duel(game, SearchAgent(PvNet.initial(game), 32), RandomAgent(), 20, 1, opening_plies=0)
    assert tally.games == 20 and tally.wins > tally.losses
    minimax = MinimaxAgent(game)
    board = board_of(game, "XX.. OO.. .... ....")
    assert minimax.moves(board[None, :], np.random.default_rng(0)).tolist() == [2]
    # O to move; X threatens to complete the first row at cell 2: O must block there.
    board = board_of(game, "XX.. O... .... ....")
    assert minimax.moves(board[None, :], np.random.default_rng(0)).tolist() == [2]
