"""An exact alpha-beta solver on bitboards, with a node budget: the bench's referee.

``solver.py`` enumerates every position and is limited to 3x3; this one proves the
value of a single position of any config (1: the player to move wins by force, 0: a
draw, -1: a loss) by negamax with alpha-beta over those three values, a transposition
table of bounds, and the exact rules that cut the tree: a completing cell wins, two
completing cells of the opponent lose, one must be blocked, and a move making two
completing cells (while the opponent has none) wins. Boards are Python integers, one
bit per cell for each side. It gives up (``None``) after ``budget`` nodes.

The bench uses it to say which openings of a match were already lost by force for a
side before either player moved (bench/mnk_strength.py): a loss from such an opening
says nothing about the loser's play. It is never part of a player or a learning target.
"""

from __future__ import annotations

from collections.abc import Sequence

from workloads.mnk.game import Game


class OutOfBudget(Exception):
    """The proof needed more nodes than allowed."""


class Prover:
    """Game values of one config's positions; the table is kept between calls."""

    def __init__(self, game: Game) -> None:
        self.game = game
        self.lines = [sum(1 << int(c) for c in line) for line in game.lines]
        self.full = (1 << game.cells) - 1
        through = [sum(1 for line in self.lines if line >> c & 1) for c in range(game.cells)]
        #: Cells on more lines first: the better moves are usually tried first.
        self.order = sorted(range(game.cells), key=lambda c: -through[c])
        self.table: dict[tuple[int, int], tuple[int, int]] = {}
        self.nodes = 0
        self._limit = 0

    def value(self, moves: Sequence[int], budget: int = 1_000_000) -> int | None:
        """The value for the player to move after ``moves`` (X first) from the empty
        board, or None when ``budget`` nodes did not settle it."""
        x = o = 0
        for ply, cell in enumerate(moves):
            if ply % 2 == 0:
                x |= 1 << int(cell)
            else:
                o |= 1 << int(cell)
        me, opp = (x, o) if len(moves) % 2 == 0 else (o, x)
        self._limit = self.nodes + budget
        try:
            return self._negamax(me, opp, -1, 1)
        except OutOfBudget:
            return None

    def _completing(self, me: int, opp: int) -> int:
        """The cells where ``me`` completes a line (a bit set)."""
        out, need = 0, self.game.k - 1
        for line in self.lines:
            if not line & opp and (line & me).bit_count() == need:
                out |= line & ~me
        return out

    def _makes_two(self, me: int, opp: int) -> bool:
        """Does some move of ``me`` create two distinct completing cells?"""
        need = self.game.k - 2
        partner: dict[int, int] = {}
        for line in self.lines:
            if not line & opp and (line & me).bit_count() == need:
                free = line & ~me
                a = free & -free
                b = free ^ a
                for cell, other in ((a, b), (b, a)):
                    seen = partner.setdefault(cell, other)
                    if seen != other:
                        return True
        return False

    def _negamax(self, me: int, opp: int, alpha: int, beta: int) -> int:
        self.nodes += 1
        if self.nodes > self._limit:
            raise OutOfBudget
        key = (me, opp)
        known = self.table.get(key)
        if known is not None:
            low, high = known
            if low == high or low >= beta:
                return low
            if high <= alpha:
                return high
            alpha, beta = max(alpha, low), min(beta, high)
        empty = self.full & ~(me | opp)
        if not empty:
            return 0
        if self._completing(me, opp):
            return 1
        threats = self._completing(opp, me)
        if threats & (threats - 1):
            return -1
        if threats:
            moves = [threats.bit_length() - 1]
        elif self.game.k >= 3 and self._makes_two(me, opp):
            return 1
        else:
            moves = [c for c in self.order if empty >> c & 1]
        first_alpha, first_beta, best = alpha, beta, -1
        for cell in moves:
            best = max(best, -self._negamax(opp, me | 1 << cell, -beta, -alpha))
            alpha = max(alpha, best)
            if alpha >= beta:
                break
        if best <= first_alpha:
            self.table[key] = (-1, best)
        elif best >= first_beta:
            self.table[key] = (best, 1)
        else:
            self.table[key] = (best, best)
        return best
