"""Training the policy-value network on (position, visit distribution, outcome) samples.

Each sample is a position before a move of a self-play game, the search's visit
distribution there (the policy target) and the value target: the game's final
outcome seen by the player to move, averaged with the search's value of the position
(``search_weight``; less noisy than the outcome alone, which one late blunder flips).
Every epoch shows each sample once under a random one of the board's symmetries (8 on
a square board), the same permutation applied to the board and to its policy target.
Positions of games played without search (no visit counts) train the value head only.
Losses are the means of (policy loss + value loss) per epoch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from workloads.mnk.data import Positions
from workloads.mnk.game import Boards, Game
from workloads.mnk.pvnet import Adam, PvNet

F32 = NDArray[np.float32]


@dataclass(frozen=True)
class PvSettings:
    """How the network is trained (``epochs`` may come from the job's args)."""

    epochs: int = 4
    lr: float = 2e-3
    batch: int = 256
    weight_decay: float = 1e-4
    #: Most samples per training run (a seeded sample of them when there are more).
    max_positions: int = 60_000
    #: Weight of the search's root value in the value target; the rest is the outcome.
    search_weight: float = 0.5


PV_SETTINGS: dict[str, PvSettings] = {
    "4x4k3": PvSettings(epochs=6),
    "5x5k4": PvSettings(epochs=8),
}


def augment(
    game: Game, boards: Boards, policies: F32, which: NDArray[np.intp]
) -> tuple[Boards, F32]:
    """Board ``i`` and its policy under symmetry ``which[i]``.

    A symmetry is a permutation ``perm`` of the cells with ``new[j] = old[perm[j]]``;
    the move to cell ``perm[j]`` on the old board is the move to ``j`` on the new one,
    so the policy is permuted the same way.
    """
    perms = game.symmetries[which]
    return np.take_along_axis(boards, perms, axis=1), np.take_along_axis(policies, perms, axis=1)


def train_pv(
    prior: PvNet,
    positions: Positions,
    settings: PvSettings,
    seed: int,
    progress: Callable[[float], None] | None = None,
) -> tuple[PvNet, list[float], int]:
    """(a copy of ``prior`` fitted to the samples, losses per epoch, samples used)."""
    rng = np.random.default_rng(seed)
    boards, policies = positions.boards, positions.policies
    w = settings.search_weight
    outcomes = ((1.0 - w) * positions.outcomes + w * positions.searched).astype(np.float32)
    if len(boards) > settings.max_positions:
        keep = rng.choice(len(boards), size=settings.max_positions, replace=False)
        boards, outcomes, policies = boards[keep], outcomes[keep], policies[keep]
    weights = (policies.sum(axis=1) > 0).astype(np.float32)
    model = prior.copy()
    adam = Adam(model.params, settings.lr)
    symmetries = len(model.game.symmetries)
    losses: list[float] = []
    for epoch in range(settings.epochs):
        order = rng.permutation(len(boards))
        which = rng.integers(symmetries, size=len(boards))
        seen, targets = augment(model.game, boards, policies, which)
        total = 0.0
        for start in range(0, len(order), settings.batch):
            batch = order[start : start + settings.batch]
            (p_loss, v_loss), grads = model.gradients(
                seen[batch], targets[batch], outcomes[batch], weights[batch]
            )
            adam.step(grads, settings.weight_decay)
            total += (p_loss + v_loss) * len(batch)
        losses.append(total / max(1, len(order)))
        if progress is not None:
            progress((epoch + 1) / settings.epochs)
    return model, losses, len(boards)
