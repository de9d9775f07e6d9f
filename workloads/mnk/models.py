"""Models and their files: a table for 3x3, a policy-value network for bigger boards.

Every model answers the value of a position for the player to move there, in [-1, 1]
(1: that player wins); the network (``pvnet``) also gives move probabilities, which
guide the search. ``mlp`` files (the value-only network before search) still load.
Every kind is saved as an ``.npz`` holding ``kind``, ``config``, ``model_id`` and the
kind's arrays; ``model_id`` is a prefix of the sha256 of everything else, checked on
load, so a damaged file is caught even when it still unzips. A missing model stands
for the initial model of its config: the all-zero table, or the network from a fixed
seed with zero heads (uniform priors, every value 0: its search is a plain Monte Carlo
tree search on the rules).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from workloads.mnk.game import Boards, Game, make_game
from workloads.mnk.npzio import FormatError, content_id, read_npz, scalar_str, write_npz

#: Which kind of model each config trains (anything not listed: the network).
TABLE_GAMES = frozenset({"3x3k3"})


class Model(ABC):
    """A value function over the positions of one game."""

    kind: ClassVar[str]
    #: Values come in a few exact levels, so ties are real and worth breaking by traps
    #: (see play.best_moves); a network's ties are only those of an untrained one.
    exact_ties: ClassVar[bool] = False

    def __init__(self, game: Game) -> None:
        self.game = game
        #: The players' memo of per-position results, for models small enough to keep
        #: them (a model never changes once built); None: no memo.
        self.memo: dict[tuple[str, bytes, bool], Any] | None = None

    @abstractmethod
    def values(self, boards: Boards) -> NDArray[np.float64]:
        """Value of each (non-terminal) board for the player to move on it."""

    def play_values(self, boards: Boards, explore: bool = False) -> NDArray[np.float64]:
        """What the player ranks afterstates by (its opponent's values; may break ties);
        ``explore``: the self-play ranking, which may be more hopeful."""
        return self.values(boards)

    def bounds(self, boards: Boards) -> NDArray[np.float64]:
        """(lower, upper) bounds on each board's true value that the model can vouch for,
        shape (b, 2); a model that proves nothing says (-1, 1)."""
        return np.tile(np.array([-1.0, 1.0]), (len(boards), 1))

    def settled(self, boards: Boards) -> NDArray[np.bool_]:
        """Per board: is its value known for certain (self-play explores elsewhere first)?"""
        b = self.bounds(boards)
        return np.asarray(b[:, 0] >= b[:, 1])

    @abstractmethod
    def arrays(self) -> dict[str, NDArray[Any]]:
        """The model's content, as named arrays (what is saved and hashed)."""

    def content(self) -> dict[str, NDArray[Any]]:
        """Everything the file holds but the id."""
        return {"kind": np.array(self.kind), "config": np.array(self.game.name), **self.arrays()}

    @property
    def model_id(self) -> str:
        """A content hash prefix: equal models have equal ids."""
        return content_id(self.content())

    def save(self, path: Path) -> str:
        """Write the model to ``path``; returns its model_id."""
        content = self.content()
        model_id = content_id(content)
        write_npz(path, {**content, "model_id": np.array(model_id)})
        return model_id


def initial_model(game: Game) -> Model:
    """The model of a config before any training."""
    if game.name in TABLE_GAMES:
        from workloads.mnk.table import TableModel

        return TableModel(game)
    from workloads.mnk.pvnet import PvNet

    return PvNet.initial(game)


def load_model(path: Path, config: str | None = None) -> Model:
    """The model in ``path``, checked against its id (and ``config`` when given).

    Raises FormatError with a one-line reason for anything wrong with the file.
    """
    arrays = read_npz(path, {"kind": "U", "config": "U", "model_id": "U"})
    kind = scalar_str(arrays, "kind", path)
    name = scalar_str(arrays, "config", path)
    stored_id = scalar_str(arrays, "model_id", path)
    if config is not None and name != config:
        raise FormatError(f"{path.name}: a {name} model, not {config}")
    try:
        game = make_game(name)
    except KeyError as exc:
        raise FormatError(f"{path.name}: {exc.args[0]}") from None
    content = {key: value for key, value in arrays.items() if key != "model_id"}
    if content_id(content) != stored_id:
        raise FormatError(f"{path.name}: content does not match model_id {stored_id}")
    body = {key: value for key, value in content.items() if key not in ("kind", "config")}
    from workloads.mnk.mlp import MlpModel
    from workloads.mnk.pvnet import PvNet
    from workloads.mnk.table import TableModel

    try:
        if kind == TableModel.kind:
            return TableModel.from_arrays(game, body)
        if kind == PvNet.kind:
            return PvNet.from_arrays(game, body)
        if kind == MlpModel.kind:
            return MlpModel.from_arrays(game, body)
    except KeyError as exc:
        raise FormatError(f"{path.name}: {kind} model lacks array {exc.args[0]!r}") from None
    raise FormatError(f"{path.name}: unknown model kind {kind!r}")


def load_or_initial(path: Path | None, config: str) -> tuple[Model, str]:
    """(the model, its id for results): the file when it exists, else the initial model.

    The initial model's id is reported as ``""``: it was never stored in the cluster.
    """
    if path is not None and path.exists():
        model = load_model(path, config)
        return model, model.model_id
    return initial_model(make_game(config)), ""
