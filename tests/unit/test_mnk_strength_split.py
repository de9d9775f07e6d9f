"""The strength test's openings: the split of losses by their value, the drawn ones."""

from __future__ import annotations

import pytest

from bench.mnk_strength import balanced_openings, lost_by_force
from workloads.mnk.agents import RandomAgent
from workloads.mnk.arena import duel
from workloads.mnk.game import make_game
from workloads.mnk.proof import Prover


def test_losses_are_split_by_who_the_opening_favoured() -> None:
    game = make_game("4x4k3")  # a first-player win from the empty board
    opening = [5, 0]
    assert Prover(game).value(opening) == 1  # X to move wins by force
    # Lost as O: the opening was lost by force for O. Lost as X: it was not for X.
    split = lost_by_force(game, [(-1, opening), (-1, opening), (1, opening)])
    assert split == {"forced": 2, "not_forced": 1, "unsettled": 0}


def test_balanced_openings_are_draws_by_force_and_counted() -> None:
    game = make_game("3x3k3")
    found = balanced_openings(game, 6, seed=7)
    assert len(found["openings"]) == 6
    referee = Prover(game)
    assert all(referee.value(opening) == 0 for opening in found["openings"])
    values = ("drawn", "won_by_x", "won_by_o", "unsettled")
    assert sum(found[name] for name in values) == found["tried"]
    assert found["drawn"] >= 6
    # On 3x3 most pairs of stones are won by X: the filter had something to refuse.
    assert found["won_by_x"] > 0


def test_a_duel_plays_the_openings_it_is_given() -> None:
    game = make_game("3x3k3")
    opening = [4, 1]  # X in the centre, O on an edge: X wins by force
    tally = duel(
        game, RandomAgent(), RandomAgent(), 40, 3, opening_plies=2, openings=[opening] * 20
    )
    assert tally.games == 40
    assert tally.lost and all(lost == opening for _, lost in tally.lost)


def test_a_duel_refuses_too_few_openings() -> None:
    game = make_game("3x3k3")
    with pytest.raises(ValueError, match="one per pair"):
        duel(game, RandomAgent(), RandomAgent(), 10, 3, opening_plies=2, openings=[[4, 1]] * 4)
