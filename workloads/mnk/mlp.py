"""A small value network in plain numpy: two ReLU layers and a tanh output.

The input is the board seen by the player to move: one plane of their stones, one
of the opponent's. Forward and backward passes are written out by hand; training
uses Adam on the mean squared error. Everything runs in float32 on the CPU.
"""

from __future__ import annotations

import itertools
import zlib
from typing import Any

import numpy as np
from numpy.typing import NDArray

from workloads.mnk.game import Boards, Game
from workloads.mnk.models import Model
from workloads.mnk.npzio import FormatError

F32 = NDArray[np.float32]
PARAMS = ("w1", "b1", "w2", "b2", "w3", "b3")
HIDDEN = (128, 64)


def features(boards: Boards) -> F32:
    """Two planes per board, from the point of view of the player to move."""
    stones = np.count_nonzero(boards, axis=1)
    to_move = np.where(stones % 2 == 0, 1, -1).astype(np.int8)
    own = boards * to_move[:, None]
    return np.concatenate([own == 1, own == -1], axis=1).astype(np.float32)


class MlpModel(Model):
    """The network's parameters and its passes."""

    kind = "mlp"

    def __init__(self, game: Game, params: dict[str, F32]) -> None:
        super().__init__(game)
        self.params = params

    @classmethod
    def initial(cls, game: Game, seed: int | None = None) -> MlpModel:
        """He-initialised hidden layers from a seed (the config's by default), output 0.

        A zero output layer makes the first model value everything 0, so it plays
        uniformly at random and its self-play data covers the board evenly.
        """
        params = hidden_layers(game, HIDDEN, seed)
        params["w3"] = np.zeros((HIDDEN[-1], 1), dtype=np.float32)
        params["b3"] = np.zeros(1, dtype=np.float32)
        return cls(game, params)

    @classmethod
    def from_arrays(cls, game: Game, arrays: dict[str, NDArray[Any]]) -> MlpModel:
        """The network a file's arrays describe, its shapes checked against the game."""
        return cls(game, checked_params("mlp", arrays, cls.initial(game, seed=0).params))

    def arrays(self) -> dict[str, NDArray[Any]]:
        """The parameters."""
        return dict(self.params)

    def copy(self) -> MlpModel:
        """An independent copy (training starts from the parent's weights)."""
        return MlpModel(self.game, {k: v.copy() for k, v in self.params.items()})

    def forward(self, x: F32) -> tuple[F32, tuple[F32, F32, F32]]:
        """Outputs (shape (b,)) and the activations backward needs."""
        p = self.params
        h1 = np.maximum(x @ p["w1"] + p["b1"], 0.0)
        h2 = np.maximum(h1 @ p["w2"] + p["b2"], 0.0)
        out = np.tanh(h2 @ p["w3"] + p["b3"])[:, 0]
        return out, (x, h1, h2)

    def values(self, boards: Boards) -> NDArray[np.float64]:
        """The network's value of each board for its player to move."""
        out, _ = self.forward(features(boards))
        return out.astype(np.float64)

    def gradients(self, x: F32, target: F32) -> tuple[float, dict[str, F32]]:
        """(mean squared error, its gradient for every parameter) on one batch."""
        out, (x, h1, h2) = self.forward(x)
        err = out - target
        loss = float(np.mean(err * err))
        p = self.params
        # d(mean err^2)/d(pre-tanh) = 2 err (1 - out^2) / batch.
        d3 = (2.0 / len(x)) * err * (1.0 - out * out)
        d3 = d3[:, None].astype(np.float32)
        d2 = (d3 @ p["w3"].T) * (h2 > 0)
        d1 = (d2 @ p["w2"].T) * (h1 > 0)
        grads = {
            "w3": h2.T @ d3,
            "b3": d3.sum(axis=0),
            "w2": h1.T @ d2,
            "b2": d2.sum(axis=0),
            "w1": x.T @ d1,
            "b1": d1.sum(axis=0),
        }
        return loss, grads


class Adam:
    """Adam over a model's parameters (state lives only for one training run)."""

    def __init__(self, model: MlpModel, lr: float, beta1: float = 0.9, beta2: float = 0.999):
        self.model, self.lr, self.beta1, self.beta2 = model, lr, beta1, beta2
        self.m = {k: np.zeros_like(v) for k, v in model.params.items()}
        self.v = {k: np.zeros_like(v) for k, v in model.params.items()}
        self.t = 0

    def step(self, grads: dict[str, F32]) -> None:
        """One update of every parameter."""
        self.t += 1
        b1, b2 = self.beta1, self.beta2
        scale = self.lr * np.sqrt(1.0 - b2**self.t) / (1.0 - b1**self.t)
        for name, grad in grads.items():
            self.m[name] = b1 * self.m[name] + (1.0 - b1) * grad
            self.v[name] = b2 * self.v[name] + (1.0 - b2) * grad * grad
            update = scale * self.m[name] / (np.sqrt(self.v[name]) + 1e-8)
            self.model.params[name] = (self.model.params[name] - update).astype(np.float32)


def hidden_layers(game: Game, hidden: tuple[int, ...], seed: int | None) -> dict[str, F32]:
    """He-initialised hidden layers ``w1, b1, ...`` over the board features, from a seed
    (the config's name by default, so every config starts from its own network)."""
    if seed is None:
        seed = zlib.crc32(game.name.encode())
    rng = np.random.default_rng(seed)
    sizes = (2 * game.cells, *hidden)
    params: dict[str, F32] = {}
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes), start=1):
        scale = np.sqrt(2.0 / fan_in)
        params[f"w{i}"] = (rng.standard_normal((fan_in, fan_out)) * scale).astype(np.float32)
        params[f"b{i}"] = np.zeros(fan_out, dtype=np.float32)
    return params


def checked_params(
    kind: str, arrays: dict[str, NDArray[Any]], expected: dict[str, F32]
) -> dict[str, F32]:
    """A file's arrays as parameters, each of the shape ``expected`` has and finite; a
    FormatError names the first that is not."""
    params = {name: np.asarray(arrays[name], dtype=np.float32) for name in expected}
    for name, want in expected.items():
        if params[name].shape != want.shape:
            raise FormatError(f"{kind} model: {name} has shape {params[name].shape}")
        if not np.isfinite(params[name]).all():
            raise FormatError(f"{kind} model: {name} holds a NaN or an infinity")
    return params
