"""The policy-value network of the bigger boards, in plain numpy.

Input: the board seen by the player to move (one plane of their stones, one of the
opponent's). Two ReLU layers feed two heads: ``policy``, one logit per cell, turned
into move probabilities by a softmax over the empty cells only; ``value``, a tanh in
[-1, 1] (1: the player to move wins). Training minimises the cross-entropy of the
policy against the search's visit distribution plus the squared error of the value
against the game's outcome; both passes are written out by hand, float32 on the CPU.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from workloads.mnk.game import EMPTY, Boards, Game
from workloads.mnk.mlp import checked_params, features, hidden_layers
from workloads.mnk.models import Model

F32 = NDArray[np.float32]
PARAMS = ("w1", "b1", "w2", "b2", "wp", "bp", "wv", "bv")
#: Two hidden layers: (128, 64) learned as fast but stalled lower (bench/RESULTS.md).
HIDDEN = (256, 128)
#: Added to the logits of occupied cells: their probability underflows to exactly 0.
MASKED = -1e9


class PvNet(Model):
    """The network's parameters, its passes and its gradients."""

    kind = "pvnet"

    def __init__(self, game: Game, params: dict[str, F32]) -> None:
        super().__init__(game)
        self.params = params

    @classmethod
    def initial(cls, game: Game, seed: int | None = None) -> PvNet:
        """He-initialised hidden layers from a seed (the config's by default), zero heads.

        Zero heads make the first network's priors uniform over the empty cells and its
        values 0: the first search is a plain Monte Carlo tree search on the rules.
        """
        params = hidden_layers(game, HIDDEN, seed)
        params["wp"] = np.zeros((HIDDEN[-1], game.cells), dtype=np.float32)
        params["bp"] = np.zeros(game.cells, dtype=np.float32)
        params["wv"] = np.zeros((HIDDEN[-1], 1), dtype=np.float32)
        params["bv"] = np.zeros(1, dtype=np.float32)
        return cls(game, params)

    @classmethod
    def from_arrays(cls, game: Game, arrays: dict[str, NDArray[Any]]) -> PvNet:
        """The network a file's arrays describe, its shapes checked against the game."""
        return cls(game, checked_params("pvnet", arrays, cls.initial(game, seed=0).params))

    def arrays(self) -> dict[str, NDArray[Any]]:
        """The parameters."""
        return dict(self.params)

    def copy(self) -> PvNet:
        """An independent copy (training starts from the parent's weights)."""
        return PvNet(self.game, {k: v.copy() for k, v in self.params.items()})

    def forward(self, boards: Boards) -> tuple[F32, F32, tuple[F32, F32, F32]]:
        """(move probabilities (b, cells), values (b,), the activations backward needs)."""
        p = self.params
        x = features(boards)
        h1 = np.maximum(x @ p["w1"] + p["b1"], 0.0)
        h2 = np.maximum(h1 @ p["w2"] + p["b2"], 0.0)
        logits = h2 @ p["wp"] + p["bp"] + np.where(boards == EMPTY, 0.0, MASKED)
        logits -= logits.max(axis=1, keepdims=True)
        odds = np.exp(logits)
        probs = (odds / odds.sum(axis=1, keepdims=True)).astype(np.float32)
        values = np.tanh(h2 @ p["wv"] + p["bv"])[:, 0].astype(np.float32)
        return probs, values, (x, h1, h2)

    def predict(self, boards: Boards) -> tuple[F32, F32]:
        """(priors over the cells, values) of non-terminal boards, for the search."""
        probs, values, _ = self.forward(boards)
        return probs, values

    def values(self, boards: Boards) -> NDArray[np.float64]:
        """The value head: each board's value for its player to move."""
        return self.forward(boards)[1].astype(np.float64)

    def gradients(
        self, boards: Boards, policy: F32, outcome: F32, policy_weight: F32
    ) -> tuple[tuple[float, float], dict[str, F32]]:
        """((policy loss, value loss), the gradient of their sum) on one batch.

        ``policy`` rows are visit distributions; ``policy_weight`` is 0 for positions
        that have none (games without search), which then train the value head only.
        """
        probs, values, (x, h1, h2) = self.forward(boards)
        b = float(len(boards))
        p = self.params
        log_probs = np.log(np.maximum(probs, 1e-12))
        policy_loss = float(-(policy_weight * (policy * log_probs).sum(axis=1)).sum() / b)
        err = values - outcome
        value_loss = float(np.mean(err * err))
        # Softmax with cross-entropy: d/dlogits = probs - target (masked cells are 0 in both).
        d_logits = ((probs - policy) * policy_weight[:, None] / b).astype(np.float32)
        d_value = ((2.0 / b) * err * (1.0 - values * values))[:, None].astype(np.float32)
        d_h2 = (d_logits @ p["wp"].T + d_value @ p["wv"].T) * (h2 > 0)
        d_h1 = (d_h2 @ p["w2"].T) * (h1 > 0)
        grads = {
            "wp": h2.T @ d_logits,
            "bp": d_logits.sum(axis=0),
            "wv": h2.T @ d_value,
            "bv": d_value.sum(axis=0),
            "w2": h1.T @ d_h2,
            "b2": d_h2.sum(axis=0),
            "w1": x.T @ d_h1,
            "b1": d_h1.sum(axis=0),
        }
        return (policy_loss, value_loss), grads


class Adam:
    """Adam over a parameter dict (state lives only for one training run)."""

    def __init__(self, params: dict[str, F32], lr: float, beta1: float = 0.9, beta2: float = 0.999):
        self.params, self.lr, self.beta1, self.beta2 = params, lr, beta1, beta2
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}
        self.t = 0

    def step(self, grads: dict[str, F32], weight_decay: float = 0.0) -> None:
        """One update of every parameter (decoupled weight decay on the matrices)."""
        self.t += 1
        b1, b2 = self.beta1, self.beta2
        scale = self.lr * np.sqrt(1.0 - b2**self.t) / (1.0 - b1**self.t)
        for name, grad in grads.items():
            self.m[name] = b1 * self.m[name] + (1.0 - b1) * grad
            self.v[name] = b2 * self.v[name] + (1.0 - b2) * grad * grad
            update = scale * self.m[name] / (np.sqrt(self.v[name]) + 1e-8)
            if weight_decay and name.startswith("w"):
                update = update + self.lr * weight_decay * self.params[name]
            self.params[name] = (self.params[name] - update).astype(np.float32)
