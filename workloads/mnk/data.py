"""Self-play games on disk (``games.npz``) and the positions they pass through.

A games file holds, for G games on a board of C cells:

- ``config`` (string), ``model_id`` (string, ``""`` for the initial model), ``version`` (2);
- ``moves`` int8 (G, C): the cells played in order, padded with -1;
- ``lengths`` int16 (G,): moves per game;
- ``outcomes`` int8 (G,): 1 when X (the first player) won, -1 when O won, 0 for a draw;
- ``explored`` bool (G, C): which moves were exploration (random) rather than greedy;
- ``visits`` uint16 (G, C, C), version 2, games played with search only: the root
  visit counts of the search before each move (row t: ply t), the policy targets.
  Files without it (version 1, the 3x3 table's games) train the value only;
- ``root_values`` float16 (G, C), version 2, with ``visits``: the search's value of
  the position before each ply for the player to move there (its root's mean value).

Replaying is vectorised over all games at once, one ply at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from workloads.mnk.game import Boards, Game, make_game
from workloads.mnk.npzio import FormatError, read_npz, scalar_str, write_npz

VERSION = 2


@dataclass(frozen=True)
class Games:
    """A batch of finished games of one config."""

    config: str
    model_id: str
    moves: NDArray[np.int8]
    lengths: NDArray[np.int16]
    outcomes: NDArray[np.int8]
    explored: NDArray[np.bool_]
    visits: NDArray[np.uint16] | None = None
    root_values: NDArray[np.float16] | None = None

    def __len__(self) -> int:
        return len(self.outcomes)

    @classmethod
    def build(
        cls,
        game: Game,
        model_id: str,
        records: list[tuple[list[int], int, list[bool]]],
        visits: list[NDArray[np.uint16]] | None = None,
        root_values: list[NDArray[np.float32]] | None = None,
    ) -> Games:
        """Pack (moves, winner, explored flags) records, and each game's (plies, C) root
        visit counts when it was played with search, into arrays."""
        g, c = len(records), game.cells
        moves = np.full((g, c), -1, dtype=np.int8)
        explored = np.zeros((g, c), dtype=np.bool_)
        for i, (played, _, flags) in enumerate(records):
            moves[i, : len(played)] = played
            explored[i, : len(flags)] = flags
        lengths = np.array([len(r[0]) for r in records], dtype=np.int16)
        outcomes = np.array([r[1] for r in records], dtype=np.int8)
        packed = None
        if visits is not None:
            packed = np.zeros((g, c, c), dtype=np.uint16)
            for i, counts in enumerate(visits):
                packed[i, : len(counts)] = counts
        values = None
        if root_values is not None:
            values = np.zeros((g, c), dtype=np.float16)
            for i, row in enumerate(root_values):
                values[i, : len(row)] = row
        return cls(game.name, model_id, moves, lengths, outcomes, explored, packed, values)

    def save(self, path: Path) -> None:
        """Write the games file."""
        write_npz(
            path,
            {
                "config": np.array(self.config),
                "model_id": np.array(self.model_id),
                "version": np.array(VERSION, dtype=np.int64),
                "moves": self.moves,
                "lengths": self.lengths,
                "outcomes": self.outcomes,
                "explored": self.explored,
                **({} if self.visits is None else {"visits": self.visits}),
                **({} if self.root_values is None else {"root_values": self.root_values}),
            },
        )

    @classmethod
    def load(cls, path: Path, config: str | None = None) -> Games:
        """Read and check a games file (FormatError says what is wrong with it)."""
        need = {"config": "U", "model_id": "U", "moves": "i", "lengths": "i", "outcomes": "i"}
        arrays = read_npz(path, need)
        name = scalar_str(arrays, "config", path)
        if config is not None and name != config:
            raise FormatError(f"{path.name}: {name} games, not {config}")
        try:
            game = make_game(name)
        except KeyError as exc:
            raise FormatError(f"{path.name}: {exc.args[0]}") from None
        moves, lengths, outcomes = arrays["moves"], arrays["lengths"], arrays["outcomes"]
        explored = arrays.get("explored", np.zeros(moves.shape, dtype=np.bool_))
        g = len(outcomes)
        if moves.shape != (g, game.cells) or lengths.shape != (g,) or explored.shape != moves.shape:
            raise FormatError(f"{path.name}: array shapes do not match {g} games of {name}")
        if g and (lengths.min() < 1 or lengths.max() > game.cells or np.abs(outcomes).max() > 1):
            raise FormatError(f"{path.name}: lengths or outcomes out of range")
        if ((moves < -1) | (moves >= game.cells)).any():
            raise FormatError(f"{path.name}: a move is off the board")
        visits = arrays.get("visits")
        if visits is not None:
            if visits.shape != (g, game.cells, game.cells) or visits.dtype.kind not in "ui":
                raise FormatError(f"{path.name}: visits do not match {g} games of {name}")
            if (visits < 0).any():
                raise FormatError(f"{path.name}: a visit count is negative")
            visits = visits.astype(np.uint16)
        values = arrays.get("root_values")
        if values is not None:
            if values.shape != (g, game.cells) or values.dtype.kind != "f":
                raise FormatError(f"{path.name}: root_values do not match {g} games of {name}")
            if not (np.abs(values.astype(np.float32)) <= 1.0).all():  # NaN fails this too
                raise FormatError(f"{path.name}: a root value is outside [-1, 1]")
            values = values.astype(np.float16)
        return cls(
            name,
            scalar_str(arrays, "model_id", path),
            moves.astype(np.int8),
            lengths.astype(np.int16),
            outcomes.astype(np.int8),
            explored.astype(np.bool_),
            visits,
            values,
        )

    def counts(self) -> dict[str, int]:
        """Games and how they ended (the selfplay result's tallies)."""
        return {
            "games": len(self),
            "x_wins": int((self.outcomes == 1).sum()),
            "o_wins": int((self.outcomes == -1).sum()),
            "draws": int((self.outcomes == 0).sum()),
        }


@dataclass(frozen=True)
class Positions:
    """Every non-terminal position of a set of games, in the order played."""

    boards: Boards
    #: Final outcome seen by the player to move in that position (1: they went on to win).
    outcomes: NDArray[np.float32]
    game_index: NDArray[np.intp]
    ply: NDArray[np.intp]
    #: The search's visit distribution before the move (sums to 1), or all zeros in
    #: games played without search.
    policies: NDArray[np.float32]
    #: The search's value of the position for the player to move (the outcome itself
    #: where the games have no root values).
    searched: NDArray[np.float32]


def replay(games: Games) -> Positions:
    """The positions before each move of each game (FormatError on an illegal move)."""
    g = len(games)
    cells = games.moves.shape[1]
    boards = np.zeros((g, cells), dtype=np.int8)
    seen: list[Boards] = []
    index: list[NDArray[np.intp]] = []
    plies: list[NDArray[np.intp]] = []
    targets: list[NDArray[np.float32]] = []
    searched: list[NDArray[np.float32]] = []
    for t in range(int(games.lengths.max(initial=0))):
        rows = np.flatnonzero(games.lengths > t)
        cols = games.moves[rows, t].astype(np.intp)
        if (cols < 0).any() or (boards[rows, cols] != 0).any():
            raise FormatError(f"games of {games.config}: illegal move at ply {t}")
        seen.append(boards[rows].copy())
        index.append(rows)
        plies.append(np.full(len(rows), t, dtype=np.intp))
        if games.visits is not None:
            counts = games.visits[rows, t]
            if ((counts > 0) & (boards[rows] != 0)).any():
                raise FormatError(f"games of {games.config}: visits on a stone at ply {t}")
            targets.append(normalised(counts))
        if games.root_values is not None:
            searched.append(games.root_values[rows, t].astype(np.float32))
        boards[rows, cols] = 1 if t % 2 == 0 else -1
    if not seen:
        empty = np.zeros((0, cells), dtype=np.int8)
        none = np.zeros(0, dtype=np.intp)
        no_policy = np.zeros((0, cells), dtype=np.float32)
        nothing = np.zeros(0, dtype=np.float32)
        return Positions(empty, nothing, none, none, no_policy, nothing)
    all_index = np.concatenate(index)
    all_ply = np.concatenate(plies)
    to_move = np.where(all_ply % 2 == 0, 1, -1)
    outcomes = (games.outcomes[all_index] * to_move).astype(np.float32)
    all_boards = np.concatenate(seen)
    none_seen = np.zeros(all_boards.shape, dtype=np.float32)
    policies = np.concatenate(targets) if targets else none_seen
    values = np.concatenate(searched) if searched else outcomes
    return Positions(all_boards, outcomes, all_index, all_ply, policies, values)


def normalised(visits: NDArray[np.uint16]) -> NDArray[np.float32]:
    """Visit counts as distributions: each row sums to 1, or is all zeros when empty."""
    counts = visits.astype(np.float32)
    sums = counts.sum(axis=1, keepdims=True)
    return np.asarray(counts / np.maximum(sums, 1.0), dtype=np.float32)
