"""The exhaustive 3x3 solver: the measuring stick for the table model."""

from __future__ import annotations

import numpy as np

from workloads.mnk.game import make_game
from workloads.mnk.models import Model
from workloads.mnk.solver import Solver, optimal_share, versus_perfect
from workloads.mnk.table import TableModel


class SolverModel(Model):
    """A model whose values are the solver's: perfect play, for the test only."""

    kind = "solver"

    def __init__(self, solver: Solver) -> None:
        super().__init__(solver.game)
        self.solver = solver

    def values(self, boards: np.ndarray) -> np.ndarray:
        return np.array([self.solver.value(b) for b in boards], dtype=np.float64)

    def arrays(self) -> dict[str, np.ndarray]:
        return {}


def test_empty_board_is_a_draw_and_known_positions_are_right() -> None:
    game = make_game("3x3k3")
    solver = Solver(game)
    assert solver.value(game.empty()) == 0
    # X in a corner, O on an adjacent edge: X wins.
    board = game.apply(game.apply(game.empty(), 0), 1)
    assert solver.value(board) == 1
    # X to move with two in a row and the third cell free: the win is among the moves.
    x_two = np.array([1, 1, 0, -1, -1, 0, 0, 0, 0], dtype=np.int8)
    assert solver.value(x_two) == 1
    assert 2 in set(solver.optimal_moves(x_two).tolist())


def test_perfect_play_never_loses_to_perfect_play() -> None:
    solver = Solver(make_game("3x3k3"))
    games = versus_perfect(SolverModel(solver), solver)
    for side in ("as_x", "as_o"):
        assert games[side]["games"] > 0
        assert games[side]["losses"] == 0
        assert games[side]["wins"] == 0  # perfect against perfect: every line is drawn
    good, total = optimal_share(SolverModel(solver), solver)
    assert good == total == 627  # the non-terminal positions of tic-tac-toe, up to symmetry


def test_an_untrained_table_loses_to_perfect_play() -> None:
    solver = Solver(make_game("3x3k3"))
    games = versus_perfect(TableModel(solver.game), solver)
    assert games["as_x"]["losses"] + games["as_o"]["losses"] > 0
