"""The strength test's split of a model's losses by the value of their openings."""

from __future__ import annotations

from bench.mnk_strength import lost_by_force
from workloads.mnk.game import make_game
from workloads.mnk.proof import Prover


def test_losses_are_split_by_who_the_opening_favoured() -> None:
    game = make_game("4x4k3")  # a first-player win from the empty board
    opening = [5, 0]
    assert Prover(game).value(opening) == 1  # X to move wins by force
    # Lost as O: the opening was lost by force for O. Lost as X: it was not for X.
    split = lost_by_force(game, [(-1, opening), (-1, opening), (1, opening)])
    assert split == {"forced": 2, "not_forced": 1, "unsettled": 0}
