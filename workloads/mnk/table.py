"""The 3x3 model: a table of position values learned by value iteration over the data.

Every non-terminal position seen in the games, plus every position the parent table
already knows, is a known state. One sweep from the fullest boards to the empty one
gives each known state, from its moves (a move that wins is worth 1, one that fills
the board 0, any other is worth minus the value of the position it leads to):

- ``value``: the best move among those whose outcome is known (a move into a
  position never seen is left out: nothing was learned about it);
- ``lower`` and ``upper``: bounds on the true value, where a position never seen
  could be anything (-1 to 1). When they meet, the value is certain: every line
  below the position has been seen.

Positions form a DAG layered by stone count, so one sweep in that order is a complete
batch value iteration: with data that tried every move, ``value`` is exactly minimax.
The player ranks a move by the outcome it is guaranteed (the bound), then by the value:
a draw it has proven beats a win it only guesses, so what it has seen to the end it
never gets wrong. Self-play ranks by the outcome it may still hope for (optimism in the
face of uncertainty): it heads for the lines it knows least, and the games it plays
there are the data that settle them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from workloads.mnk.game import Boards, Game
from workloads.mnk.models import Model
from workloads.mnk.npzio import FormatError

#: Weight of the guaranteed bound in a position's play value; the values are -1, 0 or
#: 1, so this only ever breaks ties.
TIE_BREAK = 1e-3
UNKNOWN = (0.0, -1.0, 1.0)
Entry = tuple[float, float, float]


class TableModel(Model):
    """(value, lower, upper) by canonical key; unknown positions are (0, -1, 1)."""

    kind = "table"
    exact_ties = True

    def __init__(self, game: Game, table: dict[int, Entry] | None = None) -> None:
        super().__init__(game)
        self.table: dict[int, Entry] = dict(table or {})
        self.memo = {}

    def entries(self, boards: Boards) -> NDArray[np.float64]:
        """(value, lower, upper) of each board, shape (b, 3)."""
        get = self.table.get
        rows = [get(int(k), UNKNOWN) for k in self.game.keys(boards)]
        return np.array(rows, dtype=np.float64).reshape(-1, 3)

    def values(self, boards: Boards) -> NDArray[np.float64]:
        """The value learned for each board (0 for a board never seen)."""
        return np.asarray(self.entries(boards)[:, 0])

    def play_values(self, boards: Boards, explore: bool = False) -> NDArray[np.float64]:
        """The opponent's upper bound (``explore``: lower bound) first, then its value.

        The mover negates these: in play it takes the best outcome it is guaranteed
        (proven lines first, then the better guess); in self-play the best outcome it
        may still hope for, which leads it into the lines it knows least.
        """
        e = self.entries(boards)
        return np.asarray(e[:, 1 if explore else 2] + TIE_BREAK * e[:, 0])

    def bounds(self, boards: Boards) -> NDArray[np.float64]:
        """The learned (lower, upper) bounds."""
        return np.asarray(self.entries(boards)[:, 1:])

    def arrays(self) -> dict[str, NDArray[Any]]:
        """Keys in increasing order and their value and bounds."""
        keys = sorted(self.table)
        columns = np.array([self.table[k] for k in keys], dtype=np.float32).reshape(-1, 3)
        return {
            "keys": np.array(keys, dtype=np.int64),
            "values": columns[:, 0].copy(),
            "lower": columns[:, 1].copy(),
            "upper": columns[:, 2].copy(),
        }

    @classmethod
    def from_arrays(cls, game: Game, arrays: dict[str, NDArray[Any]]) -> TableModel:
        """The table a file's arrays describe."""
        keys = arrays["keys"]
        columns = [arrays[name] for name in ("values", "lower", "upper")]
        if keys.ndim != 1 or any(c.shape != keys.shape for c in columns):
            raise FormatError("table model: keys, values and bounds do not match")
        rows = zip(keys.tolist(), *(c.tolist() for c in columns), strict=True)
        return cls(game, {int(k): (float(v), float(lo), float(hi)) for k, v, lo, hi in rows})


def train_table(prior: TableModel, boards: Boards) -> tuple[TableModel, list[float]]:
    """Batch value iteration over the known states; losses: mean squared change per sweep."""
    game = prior.game
    keys = {int(k) for k in np.unique(game.keys(boards))} if len(boards) else set()
    table = {key: prior.table.get(key, UNKNOWN) for key in keys | set(prior.table)}
    stones = {key: int(np.count_nonzero(game.from_key(key))) for key in table}
    order = sorted(table, key=lambda key: (-stones[key], key))
    losses = []
    for _ in range(2):
        change = 0.0
        for key in order:
            new = backup(game, game.from_key(key), table)
            change += (new[0] - table[key][0]) ** 2
            table[key] = new
        losses.append(change / max(1, len(order)))
        if change == 0.0:
            break
    return TableModel(game, table), losses


def backup(game: Game, board: NDArray[np.int8], table: dict[int, Entry]) -> Entry:
    """A known position's (value, lower, upper) from its moves."""
    moves, after, wins = game.afterstates(board)
    if wins.any():
        return (1.0, 1.0, 1.0)
    if len(moves) == 1:
        return (0.0, 0.0, 0.0)  # the last cell: the move draws
    seen: list[float] = []
    lower = upper = -1.0
    for key in game.keys(after).tolist():
        value, lo, hi = table.get(key, UNKNOWN)
        if key in table:
            seen.append(-value)
        lower, upper = max(lower, -hi), max(upper, -lo)
    current = table.get(game.key(board), UNKNOWN)[0]
    return (max(seen) if seen else current, lower, upper)
