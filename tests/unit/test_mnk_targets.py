"""Training targets of the policy-value network: visits, outcomes, symmetries, files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from workloads.mnk.data import Games, replay
from workloads.mnk.game import make_game
from workloads.mnk.models import initial_model, load_model
from workloads.mnk.npzio import FormatError, content_id, write_npz
from workloads.mnk.pvnet import PvNet
from workloads.mnk.pvtrain import PvSettings, augment, train_pv
from workloads.mnk.selfplay import SelfplaySettings, play_searched
from workloads.mnk.train import train


def searched_games(game_name: str, count: int, seed: int, simulations: int = 16) -> Games:
    game = make_game(game_name)
    settings = SelfplaySettings.of(game_name, 0.25, simulations)
    return play_searched(game, initial_model(game), "", count, seed, settings)


def test_visit_distributions_are_normalised_and_legal() -> None:
    data = searched_games("4x4k3", 12, 1)
    assert data.visits is not None
    positions = replay(data)
    np.testing.assert_allclose(positions.policies.sum(axis=1), 1.0, rtol=1e-6)
    assert (positions.policies[positions.boards != 0] == 0).all()
    # Each stored row holds the simulations of one search.
    for g, length in enumerate(data.lengths):
        np.testing.assert_array_equal(data.visits[g, :length].sum(axis=1), 16)
        assert not data.visits[g, length:].any()


def test_outcome_sign_is_the_player_to_move_s() -> None:
    game = make_game("4x4k3")
    # X: 0, 1, 2 wins on move 5; O played 4, 5.
    data = Games.build(game, "", [([0, 4, 1, 5, 2], 1, [False] * 5)])
    positions = replay(data)
    # X to move at plies 0, 2, 4 (won: +1), O at plies 1, 3 (lost: -1).
    assert positions.outcomes.tolist() == [1.0, -1.0, 1.0, -1.0, 1.0]
    drawn = Games.build(game, "", [([0, 4], 0, [False] * 2)])
    assert replay(drawn).outcomes.tolist() == [0.0, 0.0]
    # Without visit counts the policy targets are empty rows (value-only training),
    # and without root values the search's value is the outcome itself.
    assert not positions.policies.any()
    np.testing.assert_array_equal(positions.searched, positions.outcomes)


def test_symmetry_moves_board_and_policy_together() -> None:
    game = make_game("5x5k4")
    data = searched_games("5x5k4", 4, 2)
    positions = replay(data)
    boards, policies = positions.boards, positions.policies
    for s in range(len(game.symmetries)):
        which = np.full(len(boards), s, dtype=np.intp)
        seen, targets = augment(game, boards, policies, which)
        # Same stones, same target mass; the target's cells stay empty on the new board.
        assert (np.count_nonzero(seen, axis=1) == np.count_nonzero(boards, axis=1)).all()
        np.testing.assert_allclose(targets.sum(axis=1), 1.0, rtol=1e-6)
        assert (targets[seen != 0] == 0).all()
        # Cell c of the old board is cell inverse[c] of the new one, for stones and
        # visits alike.
        inverse = np.argsort(game.symmetries[s])
        np.testing.assert_array_equal(seen[:, inverse], boards)
        np.testing.assert_array_equal(targets[:, inverse], policies)


def test_training_fits_the_targets_and_is_deterministic() -> None:
    data = searched_games("4x4k3", 60, 3)
    positions = replay(data)
    settings = PvSettings(epochs=6)
    model = PvNet.initial(make_game("4x4k3"))
    trained, losses, samples = train_pv(model, positions, settings, seed=1)
    assert samples == len(positions.boards) and len(losses) == 6
    assert losses[-1] < losses[0]
    again, losses_again, _ = train_pv(model, positions, settings, seed=1)
    assert again.model_id == trained.model_id and losses_again == losses
    probs, values = trained.predict(positions.boards)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert (probs[positions.boards != 0] == 0).all() and (np.abs(values) <= 1).all()


def test_gradients_match_finite_differences() -> None:
    game = make_game("4x4k3")
    rng = np.random.default_rng(0)
    model = PvNet.initial(game, seed=1)
    # Random heads and biases: zero biases would put the empty board's units exactly
    # on the ReLU's kink, where finite differences disagree with any gradient.
    for name in ("wp", "wv", "b1", "b2"):
        shape = model.params[name].shape
        model.params[name] = rng.standard_normal(shape).astype(np.float32) * 0.3
    positions = replay(searched_games("4x4k3", 3, 4))
    boards, policy = positions.boards[:12], positions.policies[:12]
    outcome = positions.outcomes[:12]
    weight = np.ones(len(boards), dtype=np.float32)
    _, grads = model.gradients(boards, policy, outcome, weight)
    for name in ("w1", "wp", "wv", "b2"):
        flat = model.params[name].reshape(-1)
        i = int(np.argmax(np.abs(grads[name].reshape(-1))))
        old, eps = float(flat[i]), 1e-3
        flat[i] = old + eps
        up = sum(model.gradients(boards, policy, outcome, weight)[0])
        flat[i] = old - eps
        down = sum(model.gradients(boards, policy, outcome, weight)[0])
        flat[i] = old
        numeric = (up - down) / (2 * eps)
        assert numeric == pytest.approx(float(grads[name].reshape(-1)[i]), rel=0.05, abs=1e-4)


def test_games_files_keep_visits_and_refuse_bad_ones(tmp_path: Path) -> None:
    data = searched_games("4x4k3", 5, 5)
    path = tmp_path / "games.npz"
    data.save(path)
    loaded = Games.load(path, "4x4k3")
    assert loaded.visits is not None and data.visits is not None
    np.testing.assert_array_equal(loaded.visits, data.visits)
    assert loaded.root_values is not None and data.root_values is not None
    np.testing.assert_array_equal(loaded.root_values, data.root_values)
    searched = replay(loaded).searched
    assert (np.abs(searched) <= 1).all() and len(searched) == loaded.lengths.sum()
    arrays = dict(np.load(path))
    arrays["visits"] = arrays["visits"][:, :3]
    write_npz(tmp_path / "short.npz", arrays)
    with pytest.raises(FormatError, match="visits do not match"):
        Games.load(tmp_path / "short.npz")
    arrays = dict(np.load(path))
    arrays["visits"][0, 1, int(arrays["moves"][0, 0])] = 5  # a visit on a stone
    write_npz(tmp_path / "stone.npz", arrays)
    with pytest.raises(FormatError, match="visits on a stone"):
        replay(Games.load(tmp_path / "stone.npz"))
    arrays = dict(np.load(path))
    arrays["root_values"][0, 0] = np.nan
    write_npz(tmp_path / "nan.npz", arrays)
    with pytest.raises(FormatError, match="outside"):
        Games.load(tmp_path / "nan.npz")


def test_pvnet_files_round_trip_and_refuse_damage(tmp_path: Path) -> None:
    data = searched_games("5x5k4", 8, 6)
    model, _, _ = train(initial_model(make_game("5x5k4")), [data], seed=1, epochs=1)
    assert isinstance(model, PvNet)
    path = tmp_path / "model.npz"
    model_id = model.save(path)
    loaded = load_model(path, "5x5k4")
    assert isinstance(loaded, PvNet) and loaded.model_id == model_id
    boards = replay(data).boards
    np.testing.assert_array_equal(loaded.predict(boards)[0], model.predict(boards)[0])
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(FormatError) as caught:
        load_model(truncated)
    assert "\n" not in str(caught.value) and "truncated.npz" in str(caught.value)
    arrays = dict(np.load(path))
    arrays["wp"] = arrays["wp"] + 1
    write_npz(tmp_path / "tampered.npz", arrays)
    with pytest.raises(FormatError, match="does not match model_id"):
        load_model(tmp_path / "tampered.npz")
    # A consistent id over a file that lacks a head: refused for what it lacks.
    arrays = {k: v for k, v in np.load(path).items() if k not in ("wv", "model_id")}
    write_npz(tmp_path / "lacking.npz", {**arrays, "model_id": np.array(content_id(arrays))})
    with pytest.raises(FormatError, match="lacks array 'wv'"):
        load_model(tmp_path / "lacking.npz")


def test_searched_selfplay_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    # A retried job computes the same games: the same bytes, one blob in the store.
    first, again = searched_games("4x4k3", 70, 9), searched_games("4x4k3", 70, 9)
    first.save(tmp_path / "a.npz")
    again.save(tmp_path / "b.npz")
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    assert len(first) == 70  # more than one batch of games played together
