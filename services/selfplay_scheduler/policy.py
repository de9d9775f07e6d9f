"""How the selfplay scheduler sizes and splits its work: pure functions, no I/O.

**Target.** Queued selfplay jobs (PENDING or DISPATCHED) keep a backlog ahead of
the slots, so a slot that frees up finds work at once instead of waiting for a
round: ``target = max(free, slots x backlog_per_slot) + buffer`` over the alive
selfplay nodes (0 with none alive), and a round submits ``target - queued`` jobs
(never negative). Queued work waits in the capability pool (late binding), so a
node that dies strands none of it.

**Sizing.** A job's fixed cost (process start, imports, model load, upload, reports)
is paid per job, so each game's games per job are sized to make a job last
``target_job_s``: the scheduler keeps a moving average of the seconds per game its
jobs took (``run_s / games``, fixed cost included) and asks for
``target_job_s / seconds_per_game`` games. With a run of ``f + n p`` seconds for
``n`` games, that step converges to ``n = (target - f) / p``, the size whose whole
run is the target.

**Priority.** Each game's priority is a sum of boosts times penalties::

    priority = (base + bootstrap + staleness + elo_gap) * training * plateau * override

with, for the default :class:`PriorityWeights`,

- ``base`` 1.0: every game gets some work;
- ``bootstrap`` up to 2.0, falling linearly to 0 as ``games_total`` reaches
  ``bootstrap_games`` (2000): a new game first needs games at all;
- ``staleness`` up to 1.0, growing linearly over ``staleness_horizon_s`` (30 min) since
  the game was last trained or got a new champion (full when it never was);
- ``elo_gap`` up to 1.0: the champion's distance below ``elo_target`` over
  ``elo_scale`` (500 Elo; full with no champion, 0 at or above the target);
- ``training`` 0.3 while a training job of the game runs (its next data will be
  judged by a model that is about to change);
- ``plateau`` 0.7 per candidate rejected in a row, never below 0.25;
- ``override`` the operator's weight (1.0 unless set; 0 stops the game).

**Split.** Priorities become shares (:func:`shares`): proportional, but a starved
config (share below ``min_share``) is lifted to ``min_share`` and the others scaled
down. :func:`allocate` hands out N jobs one at a time to the game with the most
credit, where each game earns ``N x share`` per round and spends 1 per job; the
credit carried between rounds keeps the long-run split at the shares even when every
round submits only one job.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Annotated

import msgspec

from shared.jobs import NodeInfo

NonNegative = Annotated[float, msgspec.Meta(ge=0)]
Positive = Annotated[float, msgspec.Meta(gt=0)]
Factor = Annotated[float, msgspec.Meta(gt=0, le=1)]

#: Credit a game may carry between rounds, either way: old rounds fade out.
CREDIT_CAP = 2.0
#: Priorities below this count as zero (an override of 0, or a vanishing product).
EPSILON = 1e-12


class PriorityWeights(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The documented weights of :func:`terms` (see the module docstring)."""

    base: NonNegative = 1.0
    bootstrap: NonNegative = 2.0
    bootstrap_games: Annotated[int, msgspec.Meta(ge=1)] = 2000
    staleness: NonNegative = 1.0
    staleness_horizon_s: Positive = 1800.0
    elo_gap: NonNegative = 1.0
    elo_scale: Positive = 500.0
    training_factor: Factor = 0.3
    plateau_decay: Factor = 0.7
    plateau_floor: Factor = 0.25


class GameInputs(msgspec.Struct, frozen=True, kw_only=True):
    """What the scheduler knows of one game when it computes priorities."""

    games_total: int = 0
    #: Seconds since the last training or new champion; None: never trained.
    staleness_s: float | None = None
    #: The champion's Elo; None: no champion yet.
    elo: float | None = None
    in_training: bool = False
    #: Candidates rejected in a row since the last accepted one.
    plateau: int = 0
    #: The operator's weight; None: no override.
    override: float | None = None


def _clamp01(x: float) -> float:
    return min(1.0, max(0.0, x))


def terms(inputs: GameInputs, weights: PriorityWeights, elo_target: float) -> dict[str, float]:
    """Each boost and penalty of one game's priority, by name."""
    w = weights
    stale = 1.0 if inputs.staleness_s is None else inputs.staleness_s / w.staleness_horizon_s
    gap = 1.0 if inputs.elo is None else (elo_target - inputs.elo) / w.elo_scale
    return {
        "base": w.base,
        "bootstrap": w.bootstrap * _clamp01(1.0 - inputs.games_total / w.bootstrap_games),
        "staleness": w.staleness * _clamp01(stale),
        "elo_gap": w.elo_gap * _clamp01(gap),
        "training": w.training_factor if inputs.in_training else 1.0,
        "plateau": max(w.plateau_floor, w.plateau_decay ** max(inputs.plateau, 0)),
        "override": 1.0 if inputs.override is None else max(inputs.override, 0.0),
    }


def priority(inputs: GameInputs, weights: PriorityWeights, elo_target: float) -> float:
    """One game's priority (0 or more) from its :func:`terms`."""
    t = terms(inputs, weights, elo_target)
    boosts = t["base"] + t["bootstrap"] + t["staleness"] + t["elo_gap"]
    return boosts * t["training"] * t["plateau"] * t["override"]


def priorities(
    inputs: Mapping[str, GameInputs], weights: PriorityWeights, elo_target: float
) -> dict[str, float]:
    """The priority of every game."""
    return {name: priority(i, weights, elo_target) for name, i in inputs.items()}


def shares(prios: Mapping[str, float], min_share: float) -> dict[str, float]:
    """Fractions of the work per game, summing to 1 over games with a priority.

    Proportional to priority, except that no game with a priority gets less than
    ``min_share`` (at most ``1 / eligible``): starved ones are lifted to it and the
    rest is split among the others by priority (water-filling). Games of priority
    0 get 0; with none eligible every share is 0.
    """
    eligible = {c: p for c, p in prios.items() if p > EPSILON}
    result = dict.fromkeys(prios, 0.0)
    if not eligible:
        return result
    floor = min(max(min_share, 0.0), 1.0 / len(eligible))
    lifted: set[str] = set()
    while True:
        free = {c: p for c, p in eligible.items() if c not in lifted}
        rest, total = 1.0 - floor * len(lifted), sum(free.values())
        # The largest free priority always keeps at least rest/len(free) >= floor, so
        # ``free`` never empties and the loop ends after at most len(eligible) passes.
        starved = {c for c, p in free.items() if rest * p / total < floor - EPSILON}
        if not starved:
            break
        lifted |= starved
    for c in lifted:
        result[c] = floor
    for c, p in free.items():
        result[c] = rest * p / total
    return result


def allocate(
    n: int, share: Mapping[str, float], credits: Mapping[str, float] | None = None
) -> tuple[dict[str, int], dict[str, float]]:
    """Split ``n`` jobs by ``share``; returns the split and the credits to carry.

    Each game with a share earns ``n x share`` credit and every job given costs its
    config 1; the next job goes to the most credit (ties: by name). With fresh
    credits every game gets at least ``floor(n x share)`` jobs.
    """
    eligible = sorted(c for c, s in share.items() if s > 0)
    split = dict.fromkeys(share, 0)
    carried = credits or {}
    credit = {c: carried.get(c, 0.0) + max(n, 0) * share[c] for c in eligible}
    if not eligible:
        return split, {}
    for _ in range(max(n, 0)):
        best = min(eligible, key=lambda c: (-credit[c], c))
        split[best] += 1
        credit[best] -= 1.0
    return split, {c: min(CREDIT_CAP, max(-CREDIT_CAP, v)) for c, v in credit.items()}


def interleave(split: Mapping[str, int]) -> list[str]:
    """The jobs of ``split`` in submission order: round-robin, biggest share first.

    Agents take queued jobs in order, so mixing the games starts every game's
    games early instead of one game's batch after another's.
    """
    left = dict(split)
    order: list[str] = []
    while any(left.values()):
        for c in sorted(left, key=lambda c: (-split[c], c)):
            if left[c] > 0:
                order.append(c)
                left[c] -= 1
    return order


def free_slots(nodes: Iterable[NodeInfo], running: Mapping[str, Collection[str]]) -> int:
    """Free selfplay slots of ``nodes`` (alive and serving selfplay, chosen by the caller).

    ``running`` names the selfplay jobs the job manager has RUNNING per node: one a
    node's latest NodeInfo does not list yet started after that NodeInfo was sent, so
    the slot it took still shows as free; it is taken off here (never below 0).
    """
    total = 0
    for info in nodes:
        listed = set(info.running_jobs)
        unreported = sum(1 for job in running.get(info.node_id, ()) if job not in listed)
        total += max(0, info.free_slots - unreported)
    return total


def target(free: int, buffer: int, nodes_alive: int, slots: int = 0, per_slot: int = 0) -> int:
    """Queued selfplay jobs wanted: the backlog (``slots x per_slot``, at least the free
    slots) plus the buffer; 0 with no node alive."""
    if nodes_alive <= 0:
        return 0
    return max(0, free, slots * per_slot) + max(0, buffer)


def total_slots(nodes: Iterable[NodeInfo]) -> int:
    """Selfplay slots of ``nodes`` (alive and serving selfplay, chosen by the caller)."""
    return sum(max(0, info.slots) for info in nodes)


#: Weight of the newest observation in the seconds-per-game average.
PACE_WEIGHT = 0.3
#: At most this factor between two successive sizes of one game: one odd job (a
#: cold cache, a loaded host) must not swing the next job's length by much more.
MAX_SIZE_STEP = 4.0


def observe_pace(current: float | None, games: int, run_s: float) -> float | None:
    """The seconds-per-game average after a job of ``games`` games that ran ``run_s``.

    A job that reports no games or no time teaches nothing: the average is kept.
    """
    if games <= 0 or run_s <= 0:
        return current
    sample = run_s / games
    if current is None:
        return sample
    return (1 - PACE_WEIGHT) * current + PACE_WEIGHT * sample


def games_per_job(
    pace_s: float | None, target_s: float, default: int, last: int | None, cap: int
) -> int:
    """Games for the next job: ``target_s / pace_s``, within ``MAX_SIZE_STEP`` of the
    ``last`` size and within ``[1, cap]``; ``default`` before any job was observed."""
    if pace_s is None or pace_s <= 0:
        return max(1, min(default, cap))
    wanted = target_s / pace_s
    if last is not None and last > 0:
        wanted = min(max(wanted, last / MAX_SIZE_STEP), last * MAX_SIZE_STEP)
    return max(1, min(round(wanted), cap))


def to_submit(wanted: int, queued: int, cap: int) -> int:
    """Jobs to submit this round: the shortfall, at most ``cap``, never negative."""
    return max(0, min(wanted - queued, cap))
