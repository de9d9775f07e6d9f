"""Players and matches."""

from __future__ import annotations

import numpy as np

from workloads.mnk.game import make_game
from workloads.mnk.match import disagreement_opening, match
from workloads.mnk.mlp import MlpModel
from workloads.mnk.play import best_moves, choose, play_game
from workloads.mnk.table import TableModel


def test_players_take_an_immediate_win() -> None:
    game = make_game("4x4k3")
    board = game.empty()
    board[[0, 1]] = 1  # X: 0, 1
    board[[4, 5]] = -1  # O: 4, 5; X to move, 2 wins
    model = MlpModel.initial(game)
    assert list(best_moves(game, model, board)) == [2]
    move, explored = choose(game, model, board, np.random.default_rng(0))
    assert (move, explored) == (2, False)


def test_a_game_ends_with_a_winner_or_a_full_board() -> None:
    game = make_game("5x5k4")
    rng = np.random.default_rng(1)
    for _ in range(20):
        played = play_game(game, None, None, rng)
        board = game.empty()
        for i, move in enumerate(played.moves):
            board = game.apply(board, move)
            assert game.terminal(board)[0] == (i == len(played.moves) - 1)
        assert game.winner(board) == played.winner


def test_match_alternates_colours_and_counts_every_game() -> None:
    game = make_game("3x3k3")
    tally = match(game, TableModel(game), None, 30, seed=4, opening_plies=1)
    assert tally.games == 30
    assert sum(tally.by_colour["as_x"]) == sum(tally.by_colour["as_o"]) == 15
    again = match(game, TableModel(game), None, 30, seed=4, opening_plies=1)
    assert again == tally  # deterministic for a seed


def test_match_stops_when_told_after_a_pair() -> None:
    game = make_game("3x3k3")
    tally = match(game, None, None, 50, seed=1, stop=lambda t, left: t.games >= 10)
    assert tally.games == 10


def test_disagreement_openings_are_legal_and_open() -> None:
    game = make_game("4x4k3")
    a, b = MlpModel.initial(game, seed=1), MlpModel.initial(game, seed=2)
    rng = np.random.default_rng(0)
    for model in (a, b):
        model.params["w3"] = rng.standard_normal(model.params["w3"].shape).astype(np.float32)
    for i in range(10):
        opening = disagreement_opening(game, a, b, np.random.default_rng(i), fallback=2)
        assert len(set(opening)) == len(opening)
        board = game.empty()
        for move in opening:
            board = game.apply(board, move)
        assert not game.terminal(board)[0]
