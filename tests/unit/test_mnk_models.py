"""Models: files, determinism, the table's value iteration, the network's training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from workloads.mnk.data import Games, replay
from workloads.mnk.game import make_game
from workloads.mnk.mlp import MlpModel, features
from workloads.mnk.models import initial_model, load_model, load_or_initial
from workloads.mnk.npzio import FormatError, write_npz
from workloads.mnk.play import play_game
from workloads.mnk.pvnet import PvNet
from workloads.mnk.table import TableModel, train_table
from workloads.mnk.train import NetSettings, train, train_net


def random_games(game_name: str, count: int, seed: int) -> Games:
    game = make_game(game_name)
    model = initial_model(game)
    rng = np.random.default_rng(seed)
    records = []
    for _ in range(count):
        played = play_game(game, model, model, rng, epsilon=0.2, explore=True)
        records.append((played.moves, played.winner, played.explored))
    return Games.build(game, "", records)


@pytest.mark.parametrize("game", ["3x3k3", "4x4k3"])
def test_save_load_round_trip(tmp_path: Path, game: str) -> None:
    model, _, _ = train(initial_model(make_game(game)), [random_games(game, 30, 1)], seed=1)
    path = tmp_path / "model.npz"
    model_id = model.save(path)
    loaded = load_model(path, game)
    assert loaded.kind == model.kind and loaded.model_id == model_id
    boards = replay(random_games(game, 5, 2)).boards
    np.testing.assert_array_equal(loaded.values(boards), model.values(boards))
    # Equal content, equal bytes: a retried job writes the same blob.
    again = tmp_path / "again.npz"
    model.save(again)
    assert again.read_bytes() == path.read_bytes()


def test_load_refuses_bad_files(tmp_path: Path) -> None:
    path = tmp_path / "model.npz"
    TableModel(make_game("3x3k3"), {5: (1.0, 1.0, 1.0)}).save(path)
    with pytest.raises(FormatError, match="not 4x4k3"):
        load_model(path, "4x4k3")
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(FormatError):
        load_model(truncated)
    # Still a valid archive, but the content no longer matches its model_id.
    arrays = dict(np.load(path))
    arrays["values"] = arrays["values"] * 0
    tampered = tmp_path / "tampered.npz"
    write_npz(tampered, arrays)
    with pytest.raises(FormatError, match="does not match model_id"):
        load_model(tampered)
    (tmp_path / "text.npz").write_text("not a model")
    with pytest.raises(FormatError, match=r"not an \.npz"):
        load_model(tmp_path / "text.npz")
    with pytest.raises(FormatError, match="no such file"):
        load_model(tmp_path / "missing.npz")


def test_a_missing_model_is_the_initial_model() -> None:
    model, model_id = load_or_initial(None, "5x5k4")
    assert model_id == "" and isinstance(model, PvNet)
    # Its heads are zero: it values everything 0 and its priors are uniform.
    assert not model.values(make_game("5x5k4").empty()[None, :]).any()
    assert initial_model(make_game("5x5k4")).model_id == model.model_id


@pytest.mark.parametrize("game", ["3x3k3", "4x4k3"])
def test_training_is_deterministic_for_a_seed(game: str) -> None:
    first = random_games(game, 40, 7)
    again = random_games(game, 40, 7)
    np.testing.assert_array_equal(first.moves, again.moves)
    a, losses_a, _ = train(initial_model(make_game(game)), [first], seed=3)
    b, losses_b, _ = train(initial_model(make_game(game)), [again], seed=3)
    assert a.model_id == b.model_id and losses_a == losses_b


def test_table_value_iteration_on_a_hand_made_game() -> None:
    game = make_game("3x3k3")
    # X: 0, 1, 2 (top row); O: 3, 4. X wins.
    data = Games.build(game, "", [([0, 3, 1, 4, 2], 1, [False] * 5)])
    positions = replay(data).boards
    table, losses = train_table(TableModel(game), positions)
    assert losses[-1] == 0.0  # the second sweep changes nothing: one sweep converged
    # (value, lower, upper) for the player to move, before each move of the game.
    expected = [
        (1.0, -1.0, 1.0),  # empty: X has a line it knows wins, nothing proven
        (-1.0, -1.0, 1.0),  # O to move after X0: O's only known reply lost
        (1.0, -1.0, 1.0),
        (-1.0, -1.0, 1.0),
        (1.0, 1.0, 1.0),  # X to move with two in a row: the win is proven
    ]
    got = [tuple(row) for row in table.entries(positions)]
    assert got == expected
    assert len(table.table) == 5


def test_table_keeps_its_parent_and_settles_proven_positions() -> None:
    game = make_game("3x3k3")
    parent, _ = train_table(TableModel(game), replay(random_games("3x3k3", 300, 5)).boards)
    child, _ = train_table(parent, replay(random_games("3x3k3", 10, 6)).boards)
    assert set(parent.table) <= set(child.table)
    settled = [key for key, (_, lo, hi) in child.table.items() if lo == hi]
    assert settled, "300 random games prove some positions"
    for key in settled:
        value, lo, _ = child.table[key]
        assert value == lo  # a proven position's value is its proven value


def test_network_gradients_match_finite_differences() -> None:
    game = make_game("4x4k3")
    model = MlpModel.initial(game, seed=1)
    rng = np.random.default_rng(0)
    model.params["w3"] = rng.standard_normal(model.params["w3"].shape).astype(np.float32) * 0.3
    boards = replay(random_games("4x4k3", 4, 1)).boards[:16]
    x, target = features(boards), rng.uniform(-1, 1, len(boards)).astype(np.float32)
    _, grads = model.gradients(x, target)
    for name in ("w1", "w3", "b2"):
        flat = model.params[name].reshape(-1)
        i = int(np.argmax(np.abs(grads[name].reshape(-1))))
        eps = 1e-2
        old = float(flat[i])
        flat[i] = old + eps
        up = model.gradients(x, target)[0]
        flat[i] = old - eps
        down = model.gradients(x, target)[0]
        flat[i] = old
        numeric = (up - down) / (2 * eps)
        assert numeric == pytest.approx(float(grads[name].reshape(-1)[i]), rel=0.05, abs=1e-4)


def test_network_loss_decreases() -> None:
    positions = replay(random_games("4x4k3", 200, 4))
    settings = NetSettings(epochs=5, outcome_weight=1.0, max_positions=5000)
    model = MlpModel.initial(make_game("4x4k3"))
    _, losses = train_net(model, positions, settings, seed=2)
    assert len(losses) == 5
    assert losses[-1] < losses[0]
