"""Monte Carlo tree search with PUCT, batched over many games' trees at once.

Every game of a batch grows its own tree from its root position, and all the trees
advance in lockstep: each simulation walks every tree from its root down to a leaf
(one numpy step per depth for all trees together), evaluates all the new leaves with
one network call, and backs their values up. The trees are arrays (game, node, cell):
child index, prior, visit count and summed value of every edge. A simulation adds at
most one node per tree, so ``simulations + 1`` nodes are always enough.

Selection is PUCT, ``Q + c * P * sqrt(N_parent + 1) / (1 + N)``, with unvisited edges
at Q = 0. A leaf's value is exact where the rules decide it: a finished game (-1 for
the player to move when the previous move won, 0 for a full board), and +1 when the
player to move can complete a line at once; there the priors go to those winning
cells. The tactical layer (``tactics.py``) adds forced blocks, lost positions (two
threats against the mover) and won ones (a double threat to make). Everything else
comes from the evaluator (the network). Values are always from
the point of view of the player to move at the node they belong to, so backing up
flips the sign at every ply.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from workloads.mnk.game import EMPTY, Boards, Game
from workloads.mnk.tactics import tactics

F32 = NDArray[np.float32]
#: (boards) -> (priors over the cells, values for the player to move).
Evaluator = Callable[[Boards], tuple[F32, F32]]


@dataclass(frozen=True)
class SearchSettings:
    """How hard and how widely the search looks."""

    simulations: int = 64
    c_puct: float = 1.5
    #: Dirichlet noise at the roots (self-play only): concentration and weight.
    noise_alpha: float = 0.3
    noise_weight: float = 0.25


def to_move(boards: Boards) -> NDArray[np.int8]:
    """The player to move on each board (1: X, -1: O)."""
    return np.where(np.count_nonzero(boards, axis=1) % 2 == 0, 1, -1).astype(np.int8)


def expand(game: Game, evaluate: Evaluator, boards: Boards) -> tuple[F32, F32]:
    """(priors, values) of non-terminal boards: the evaluator's, overridden where the
    tactical layer decides (``tactics.py``). A zero prior marks a move never tried."""
    priors, values = evaluate(boards)
    found = tactics(game, boards, to_move(boards))
    # A floor keeps every allowed move selectable even where the softmax underflows.
    priors = np.where(found.moves, np.maximum(priors, 1e-6), 0.0).astype(np.float32)
    priors /= priors.sum(axis=1, keepdims=True)
    values = np.where(found.decided, found.value, values).astype(np.float32)
    return priors, values


class Trees:
    """The search trees of a batch of root positions (see the module doc)."""

    def __init__(self, game: Game, roots: Boards, settings: SearchSettings) -> None:
        g, s, c = len(roots), settings.simulations + 1, game.cells
        self.game, self.settings = game, settings
        self.boards = np.zeros((g, s, c), dtype=np.int8)
        self.boards[:, 0] = roots
        self.child = np.full((g, s, c), -1, dtype=np.int32)
        self.prior = np.zeros((g, s, c), dtype=np.float32)
        self.visits = np.zeros((g, s, c), dtype=np.float32)
        self.total = np.zeros((g, s, c), dtype=np.float32)
        self.terminal = np.zeros((g, s), dtype=np.bool_)
        self.end_value = np.zeros((g, s), dtype=np.float32)
        self.size = np.ones(g, dtype=np.int32)

    def select(self, games: NDArray[np.intp], nodes: NDArray[np.int32]) -> NDArray[np.intp]:
        """The PUCT choice at each (game, node)."""
        n = self.visits[games, nodes]
        q = np.where(n > 0, self.total[games, nodes] / np.maximum(n, 1.0), 0.0)
        scale = self.settings.c_puct * np.sqrt(n.sum(axis=1, keepdims=True) + 1.0)
        score = q + scale * self.prior[games, nodes] / (1.0 + n)
        # Zero priors: occupied cells, and the moves the tactical layer ruled out.
        score = np.where(self.prior[games, nodes] > 0, score, -np.inf)
        return np.asarray(score.argmax(axis=1), dtype=np.intp)

    def simulate(self, evaluate: Evaluator) -> None:
        """One simulation in every tree: descend, expand the leaves, back up."""
        g = len(self.size)
        active = np.arange(g)
        node = np.zeros(g, dtype=np.int32)
        path: list[tuple[NDArray[np.intp], NDArray[np.int32], NDArray[np.intp]]] = []
        depth = np.zeros(g, dtype=np.intp)
        leaf_parent, leaf_move, leaf_child = (np.zeros(g, dtype=np.intp) for _ in range(3))
        while active.size:
            here = node[active]
            move = self.select(active, here)
            path.append((active, here, move))
            depth[active] += 1
            nxt = self.child[active, here, move]
            stop = (nxt < 0) | self.terminal[active, np.maximum(nxt, 0)]
            ended = active[stop]
            leaf_parent[ended], leaf_move[ended] = here[stop], move[stop]
            leaf_child[ended] = nxt[stop]
            node[active[~stop]] = nxt[~stop]
            active = active[~stop]
        value = self._leaf_values(evaluate, leaf_parent, leaf_move, leaf_child)
        for step, (games, nodes, moves) in enumerate(path):
            # The edge's mover is the opponent of the leaf's player every other ply.
            sign = np.where((depth[games] - step) % 2 == 1, -1.0, 1.0)
            self.visits[games, nodes, moves] += 1.0
            self.total[games, nodes, moves] += sign * value[games]

    def _leaf_values(
        self,
        evaluate: Evaluator,
        parent: NDArray[np.intp],
        move: NDArray[np.intp],
        child: NDArray[np.intp],
    ) -> F32:
        """Each tree's leaf value for its player to move, creating the new leaves."""
        g = np.arange(len(child))
        value = self.end_value[g, np.maximum(child, 0)].copy()
        new = np.flatnonzero(child < 0)
        if new.size == 0:
            return value
        boards = self.boards[new, parent[new]].copy()
        mover = to_move(boards)
        boards[np.arange(len(new)), move[new]] = mover
        index = self.size[new]
        self.size[new] += 1
        self.child[new, parent[new], move[new]] = index
        self.boards[new, index] = boards
        sums = boards[:, self.game.lines].sum(axis=2, dtype=np.int16)
        won = (sums == (mover.astype(np.int16) * self.game.k)[:, None]).any(axis=1)
        over = won | ~(boards == EMPTY).any(axis=1)
        self.terminal[new, index] = over
        self.end_value[new, index] = np.where(won, -1.0, 0.0)
        value[new] = self.end_value[new, index]
        live = ~over
        if live.any():
            priors, values = expand(self.game, evaluate, boards[live])
            self.prior[new[live], index[live]] = priors
            value[new[live]] = values
        return value


def search(
    game: Game,
    evaluate: Evaluator,
    roots: Boards,
    settings: SearchSettings,
    rng: np.random.Generator | None = None,
    tick: Callable[[float], None] | None = None,
    allowed: NDArray[np.bool_] | None = None,
) -> tuple[F32, F32]:
    """(root visit counts (b, cells), root values) of non-terminal ``roots``.

    With ``rng``, Dirichlet noise is mixed into the root priors (self-play). The visit
    counts of each root sum to ``settings.simulations``. ``tick`` hears the share of
    the simulations done, four times per search (for progress reports). ``allowed``
    (per root and cell) takes moves out of the roots' priors (lookahead.py).
    """
    trees = Trees(game, roots, settings)
    priors, _ = expand(game, evaluate, roots)
    if allowed is not None:
        kept = np.where(allowed, priors, 0.0)
        # A root whose every allowed move has prior 0 (tactics disagree) keeps its own.
        ok = kept.sum(axis=1, keepdims=True) > 0
        priors = np.where(ok, kept / np.where(ok, kept.sum(axis=1, keepdims=True), 1.0), priors)
        priors = priors.astype(np.float32)
    if rng is not None and settings.noise_weight > 0:
        legal = roots == EMPTY
        noise = rng.gamma(settings.noise_alpha, 1.0, size=roots.shape) * legal
        noise /= np.maximum(noise.sum(axis=1, keepdims=True), 1e-12)
        w = settings.noise_weight
        # Noise only among the allowed moves: a forced block stays forced.
        mixed = np.where(priors > 0, (1 - w) * priors + w * noise, 0.0)
        priors = (mixed / mixed.sum(axis=1, keepdims=True)).astype(np.float32)
    trees.prior[:, 0] = priors
    quarter = max(1, settings.simulations // 4)
    for done in range(1, settings.simulations + 1):
        trees.simulate(evaluate)
        if tick is not None and done % quarter == 0:
            tick(done / settings.simulations)
    visits = trees.visits[:, 0].copy()
    q = trees.total[:, 0].sum(axis=1) / np.maximum(visits.sum(axis=1), 1.0)
    return visits, q.astype(np.float32)
