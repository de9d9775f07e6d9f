"""The bench's exact solver on bitboards (workloads/mnk/proof.py)."""

from __future__ import annotations

from workloads.mnk.game import make_game
from workloads.mnk.proof import Prover
from workloads.mnk.solver import Solver


def test_the_small_boards_have_their_known_values() -> None:
    assert Prover(make_game("3x3k3")).value([]) == 0  # tic-tac-toe is a draw
    assert Prover(make_game("4x4k3")).value([]) == 1  # a first-player win


def test_it_agrees_with_the_exhaustive_solver_on_3x3() -> None:
    game = make_game("3x3k3")
    prover, solver = Prover(game), Solver(game)
    for first in range(9):
        for second in range(9):
            if second != first:
                board = game.apply(game.apply(game.empty(), first), second)
                assert prover.value([first, second]) == solver.value(board)


def test_a_5x5_opening_lost_by_force_and_the_budget() -> None:
    game = make_game("5x5k4")
    # X in the centre, O on the edge beside the top corner: X wins by force, and with
    # X to move the value is the mover's.
    assert Prover(game).value([12, 1]) == 1
    assert Prover(game).value([12, 1], budget=10) is None
    # O to move facing X's open three .XXX. (cells 11, 12, 13): lost.
    assert Prover(game).value([11, 0, 12, 5, 13]) == -1
