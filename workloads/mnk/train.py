"""Learning from self-play games: the table's value iteration, the networks' training.

Table (3x3): see workloads.mnk.table (batch value iteration over the positions seen).

Policy-value network (bigger boards, what ``train`` fits): see workloads.mnk.pvtrain.

Value-only network (``train_net``, the bigger boards' model before search, kept for
comparison; ``train`` hands an ``mlp`` parent over to a fresh PvNet): regression of
each position's value on a target mixing the game's final outcome for the player to
move (Monte Carlo) with a one-ply backup of the network itself (the best move's
score, as the player computes it), recomputed before every epoch, so wins and forced
losses near the end of the game are learned exactly and propagate backwards. Each
epoch sees every position once under a random
board symmetry. Losses are the mean squared errors of the epochs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from workloads.mnk.data import Games, Positions, replay
from workloads.mnk.game import Boards, Game
from workloads.mnk.mlp import Adam, MlpModel, features
from workloads.mnk.models import Model
from workloads.mnk.play import score_matrix
from workloads.mnk.pvnet import PvNet
from workloads.mnk.pvtrain import PV_SETTINGS, PvSettings, train_pv
from workloads.mnk.table import TableModel, train_table

Progress = Callable[[float], None]


@dataclass(frozen=True)
class NetSettings:
    """How a network is trained (per config; ``epochs`` may come from the job's args)."""

    epochs: int = 4
    lr: float = 2e-3
    batch: int = 256
    #: Weight of the final outcome in the target; the rest is the one-ply backup.
    outcome_weight: float = 0.3
    #: Most positions used per training run (a seeded sample of them when there are more):
    #: the backup scores every move of every position each epoch, the bulk of the work.
    max_positions: int = 16_000


#: Sized so that a training job takes a few CPU seconds on a small machine.
NET_SETTINGS: dict[str, NetSettings] = {
    "4x4k3": NetSettings(epochs=4, max_positions=16_000),
    "5x5k4": NetSettings(epochs=3, max_positions=12_000),
}


def train(
    model: Model,
    games: Sequence[Games],
    *,
    seed: int,
    epochs: int | None = None,
    progress: Progress | None = None,
) -> tuple[Model, list[float], int]:
    """(the candidate, losses, positions used) trained from ``model`` on ``games``."""
    positions = _concat([replay(g) for g in games], model.game)
    if isinstance(model, TableModel):
        table, losses = train_table(model, positions.boards)
        return table, losses, len(positions.boards)
    if isinstance(model, PvNet | MlpModel):
        # A value-only network (an older champion) hands over to a fresh PvNet: its
        # weights do not fit the two heads, and search data has policy targets.
        net = model if isinstance(model, PvNet) else PvNet.initial(model.game)
        pv = PV_SETTINGS.get(net.game.name, PvSettings())
        if epochs is not None:
            pv = PvSettings(**{**pv.__dict__, "epochs": epochs})
        return train_pv(net, positions, pv, seed, progress)
    raise TypeError(f"cannot train a {type(model).__name__}")


def _concat(parts: list[Positions], game: Game) -> Positions:
    if not parts:
        none = np.zeros(0, dtype=np.intp)
        empty = np.zeros((0, game.cells), dtype=np.int8)
        no_policy = np.zeros((0, game.cells), dtype=np.float32)
        nothing = np.zeros(0, dtype=np.float32)
        return Positions(empty, nothing, none, none, no_policy, nothing)
    return Positions(
        np.concatenate([p.boards for p in parts]),
        np.concatenate([p.outcomes for p in parts]),
        np.concatenate([p.game_index for p in parts]),
        np.concatenate([p.ply for p in parts]),
        np.concatenate([p.policies for p in parts]),
        np.concatenate([p.searched for p in parts]),
    )


def net_backup(model: MlpModel, boards: Boards, chunk: int = 2048) -> NDArray[np.float32]:
    """The one-ply value of each position: its best move's score under ``model``."""
    out = np.empty(len(boards), dtype=np.float32)
    for start in range(0, len(boards), chunk):
        part = boards[start : start + chunk]
        out[start : start + len(part)] = score_matrix(model.game, model, part).max(axis=1)
    return out


def train_net(
    prior: MlpModel,
    positions: Positions,
    settings: NetSettings,
    seed: int,
    progress: Progress | None = None,
) -> tuple[MlpModel, list[float]]:
    """Fit a copy of ``prior`` to mixed outcome / one-ply backup targets."""
    rng = np.random.default_rng(seed)
    boards, outcomes = positions.boards, positions.outcomes
    if len(boards) > settings.max_positions:
        pick = rng.choice(len(boards), size=settings.max_positions, replace=False)
        boards, outcomes = boards[pick], outcomes[pick]
    model = prior.copy()
    adam = Adam(model, settings.lr)
    symmetries = model.game.symmetries
    w = settings.outcome_weight
    losses: list[float] = []
    for epoch in range(settings.epochs):
        targets = outcomes if w >= 1.0 else w * outcomes + (1.0 - w) * net_backup(model, boards)
        targets = targets.astype(np.float32)
        order = rng.permutation(len(boards))
        perms = symmetries[rng.integers(len(symmetries), size=len(boards))]
        seen = np.take_along_axis(boards, perms, axis=1)
        total = 0.0
        for start in range(0, len(order), settings.batch):
            batch = order[start : start + settings.batch]
            loss, grads = model.gradients(features(seen[batch]), targets[batch])
            adam.step(grads)
            total += loss * len(batch)
        losses.append(total / max(1, len(order)))
        if progress is not None:
            progress((epoch + 1) / settings.epochs)
    return model, losses
