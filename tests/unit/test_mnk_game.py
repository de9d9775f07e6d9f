"""m,n,k-game rules: wins in every direction, legal moves, draws, canonical keys."""

from __future__ import annotations

import numpy as np
import pytest

from shared.training import MNK_GAMES
from workloads.mnk.game import Game, make_game

GAMES = sorted(MNK_GAMES)


def board_with(game: Game, cells: list[tuple[int, int]], player: int) -> np.ndarray:
    board = game.empty()
    for r, c in cells:
        board[r * game.n + c] = player
    return board


@pytest.mark.parametrize("game_name", GAMES)
@pytest.mark.parametrize(
    "direction", [(0, 1), (1, 0), (1, 1), (1, -1)], ids=["row", "col", "diag", "anti"]
)
@pytest.mark.parametrize("player", [1, -1])
def test_k_in_a_row_wins_in_every_direction(
    game_name: str, direction: tuple[int, int], player: int
) -> None:
    game = make_game(game_name)
    dr, dc = direction
    start_c = game.k - 1 if dc < 0 else 0
    cells = [(i * dr, start_c + i * dc) for i in range(game.k)]
    board = board_with(game, cells, player)
    assert game.winner(board) == player
    assert game.wins(board[None, :], player)[0]
    assert not game.wins(board[None, :], -player)[0]
    # One stone short is no win.
    short = board_with(game, cells[:-1], player)
    assert game.winner(short) == 0


@pytest.mark.parametrize("game_name", GAMES)
def test_lines_count_matches_the_board(game_name: str) -> None:
    game = make_game(game_name)
    m, n, k = MNK_GAMES[game_name]
    straight = m * (n - k + 1) + n * (m - k + 1)
    diagonal = 2 * (m - k + 1) * (n - k + 1)
    assert len(game.lines) == straight + diagonal


def test_legal_moves_apply_and_turns() -> None:
    game = make_game("3x3k3")
    board = game.empty()
    assert game.to_move(board) == 1
    assert list(game.legal_moves(board)) == list(range(9))
    board = game.apply(board, 4)
    assert game.to_move(board) == -1
    assert 4 not in game.legal_moves(board)
    with pytest.raises(ValueError, match="not empty"):
        game.apply(board, 4)
    moves, after, wins = game.afterstates(board)
    assert len(moves) == 8 and (after[:, 4] == 1).all() and not wins.any()
    assert (after[np.arange(8), moves] == -1).all()


def test_afterstates_flag_the_winning_move() -> None:
    game = make_game("3x3k3")
    board = board_with(game, [(0, 0), (0, 1)], 1)
    board[3], board[4] = -1, -1  # X to move: two each
    moves, _, wins = game.afterstates(board)
    assert list(moves[wins]) == [2]


def test_full_board_without_a_line_is_a_draw() -> None:
    game = make_game("3x3k3")
    board = np.array([1, -1, 1, 1, -1, -1, -1, 1, 1], dtype=np.int8)
    assert game.terminal(board) == (True, 0)
    assert game.terminal(game.empty()) == (False, 0)


@pytest.mark.parametrize("game_name", GAMES)
def test_canonical_keys_are_equal_under_symmetry(game_name: str) -> None:
    game = make_game(game_name)
    rng = np.random.default_rng(3)
    board = rng.choice(np.array([-1, 0, 1], dtype=np.int8), size=game.cells)
    keys = {game.key(board[perm]) for perm in game.symmetries}
    assert len(keys) == 1
    assert game.key(game.from_key(game.key(board))) == game.key(board)
    other = board.copy()
    other[np.flatnonzero(other == 0)[0]] = 1
    assert game.key(other) != game.key(board)


def test_symmetries_of_square_boards() -> None:
    game = make_game("3x3k3")
    assert len(game.symmetries) == 8
    corners = {game.key(game.apply(game.empty(), c)) for c in (0, 2, 6, 8)}
    edges = {game.key(game.apply(game.empty(), c)) for c in (1, 3, 5, 7)}
    assert len(corners) == 1 and len(edges) == 1 and corners != edges


def test_unknown_config_is_refused() -> None:
    with pytest.raises(KeyError, match="unknown game"):
        make_game("9x9k5")
