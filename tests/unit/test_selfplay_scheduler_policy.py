"""The selfplay scheduler's pure parts: priorities, shares, allocation, target, signals."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from msgspec.structs import replace

from services.selfplay_scheduler.nodes import SelfplayNodes
from services.selfplay_scheduler.policy import (
    CREDIT_CAP,
    GameInputs,
    PriorityWeights,
    allocate,
    free_slots,
    interleave,
    priorities,
    priority,
    shares,
    target,
    terms,
    to_submit,
)
from services.selfplay_scheduler.signals import GameSignals, Signals, apply, apply_one
from shared.events import (
    EvaluationCompleted,
    ModelPromoted,
    TrainingCompleted,
    TrainingFailed,
    TrainingStarted,
)
from shared.jobs import NodeInfo
from shared.liveness import LivenessRule
from shared.testing.builders import node_info

W = PriorityWeights()
ELO_TARGET = 1000.0


def node(node_id: str, free: int, **fields: Any) -> NodeInfo:
    values: dict[str, Any] = {"capabilities": ["selfplay"], "free_slots": free}
    values.update(fields)
    return node_info(node_id, **values)


# -- priority terms ------------------------------------------------------------------
# A game fully trained, fresh, at its Elo target: every boost off, every penalty off.
SETTLED = GameInputs(games_total=10**6, staleness_s=0.0, elo=ELO_TARGET)


@pytest.mark.parametrize(
    ("change", "term", "value"),
    [
        ({"games_total": 0}, "bootstrap", 2.0),
        ({"games_total": 1000}, "bootstrap", 1.0),
        ({"games_total": 2000}, "bootstrap", 0.0),
        ({"staleness_s": None}, "staleness", 1.0),
        ({"staleness_s": 900.0}, "staleness", 0.5),
        ({"staleness_s": 10**6}, "staleness", 1.0),
        ({"elo": None}, "elo_gap", 1.0),
        ({"elo": ELO_TARGET - 250}, "elo_gap", 0.5),
        ({"elo": ELO_TARGET + 300}, "elo_gap", 0.0),
        ({"in_training": True}, "training", 0.3),
        ({"plateau": 1}, "plateau", 0.7),
        ({"plateau": 2}, "plateau", 0.49),
        ({"plateau": 10}, "plateau", 0.25),
        ({"override": 0.0}, "override", 0.0),
        ({"override": 3.0}, "override", 3.0),
    ],
)
def test_each_term_follows_its_documented_weight(
    change: dict[str, Any], term: str, value: float
) -> None:
    inputs = replace(SETTLED, **change)
    assert terms(inputs, W, ELO_TARGET)[term] == pytest.approx(value)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({}, 1.0),  # base only
        ({"games_total": 0, "staleness_s": None, "elo": None}, 5.0),  # a brand new game
        ({"games_total": 0, "in_training": True}, 0.9),  # (1 + 2) * 0.3
        ({"plateau": 1, "override": 2.0}, 1.4),  # 1 * 0.7 * 2
        ({"games_total": 0, "override": 0.0}, 0.0),  # stopped by the operator
    ],
)
def test_priority_is_boosts_times_penalties(change: dict[str, Any], expected: float) -> None:
    inputs = replace(SETTLED, **change)
    assert priority(inputs, W, ELO_TARGET) == pytest.approx(expected)


# -- shares and allocation -----------------------------------------------------------
@pytest.mark.parametrize(
    ("prios", "min_share", "expected"),
    [
        ({"a": 1.0, "b": 1.0, "c": 2.0}, 0.1, {"a": 0.25, "b": 0.25, "c": 0.5}),
        ({"a": 10.0, "b": 1.0, "c": 1.0}, 0.1, {"a": 0.8, "b": 0.1, "c": 0.1}),  # both lifted
        ({"a": 8.0, "b": 1.0, "c": 1.0}, 0.0, {"a": 0.8, "b": 0.1, "c": 0.1}),
        ({"a": 1.0, "b": 0.0}, 0.3, {"a": 1.0, "b": 0.0}),  # priority 0 gets nothing
        ({"a": 0.0, "b": 0.0}, 0.1, {"a": 0.0, "b": 0.0}),
        ({"a": 9.0, "b": 1.0, "c": 1.0}, 0.5, {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}),  # capped
    ],
)
def test_shares(prios: dict[str, float], min_share: float, expected: dict[str, float]) -> None:
    assert shares(prios, min_share) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("n", "share", "expected"),
    [
        (7, {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}, {"a": 3, "b": 2, "c": 2}),  # ties by name
        (7, {"a": 0.8, "b": 0.1, "c": 0.1}, {"a": 5, "b": 1, "c": 1}),
        (10, {"a": 0.8, "b": 0.1, "c": 0.1}, {"a": 8, "b": 1, "c": 1}),
        (0, {"a": 0.5, "b": 0.5}, {"a": 0, "b": 0}),
        (3, {"a": 0.0, "b": 0.0}, {"a": 0, "b": 0}),
    ],
)
def test_allocate(n: int, share: dict[str, float], expected: dict[str, int]) -> None:
    assert allocate(n, share)[0] == expected


def test_carried_credit_keeps_the_long_run_split_even_one_job_at_a_time() -> None:
    share = {"a": 0.7, "b": 0.2, "c": 0.1}
    counts = dict.fromkeys(share, 0)
    credits: dict[str, float] = {}
    for _ in range(100):
        split, credits = allocate(1, share, credits)
        for c, k in split.items():
            counts[c] += k
    assert counts == {"a": 70, "b": 20, "c": 10}


def test_interleave_mixes_configs_biggest_first() -> None:
    assert interleave({"a": 1, "b": 3, "c": 0}) == ["b", "a", "b", "b"]


# -- target --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("free", "buffer", "alive", "expected"),
    [(6, 1, 2, 7), (0, 1, 2, 1), (6, 0, 2, 6), (0, 1, 0, 0), (5, 2, 0, 0)],
)
def test_target(free: int, buffer: int, alive: int, expected: int) -> None:
    assert target(free, buffer, alive) == expected


@pytest.mark.parametrize(
    ("wanted", "queued", "cap", "expected"),
    [(7, 0, 64, 7), (7, 5, 64, 2), (7, 9, 64, 0), (7, 0, 3, 3)],
)
def test_to_submit_never_overfills(wanted: int, queued: int, cap: int, expected: int) -> None:
    assert to_submit(wanted, queued, cap) == expected


def test_free_slots_take_off_running_jobs_the_node_has_not_reported_yet() -> None:
    nodes = [node("n1", 3, running_jobs=["j1"]), node("n2", 1)]
    assert free_slots(nodes, {}) == 4
    assert free_slots(nodes, {"n1": ["j1"]}) == 4  # already counted by n1
    assert free_slots(nodes, {"n1": ["j1", "j2"], "n2": ["j3", "j4"]}) == 2  # never below 0


def test_nodes_alive_within_three_and_a_half_intervals_and_serving_selfplay() -> None:
    view = SelfplayNodes("selfplay", LivenessRule(lost_after=3.5))
    view.observe(node("n1", 2, sent_at=10.0), now=100.0)
    view.observe(node("n2", 2, capabilities=["cpu"]), now=100.0)
    view.observe(node("n1", 1, sent_at=9.0), now=101.0)  # older: dropped
    assert [i.free_slots for i in view.alive(103.5)] == [2]
    assert view.alive(103.6) == [] and view.stale_dropped == 1


# -- properties ----------------------------------------------------------------------
GAMES = ("3x3k3", "4x4k3", "5x5k4")
inputs_st = st.builds(
    GameInputs,
    games_total=st.integers(0, 10_000),
    staleness_s=st.none() | st.floats(0, 10_000),
    elo=st.none() | st.floats(-500, 2000),
    in_training=st.booleans(),
    plateau=st.integers(0, 20),
    override=st.none() | st.floats(0, 100),
)
table_st = st.fixed_dictionaries({c: inputs_st for c in GAMES})
prios_st = st.dictionaries(st.sampled_from("abcdef"), st.floats(0, 1000), min_size=1)
credits_st = st.dictionaries(st.sampled_from("abcdef"), st.floats(-CREDIT_CAP, CREDIT_CAP))


@given(prios_st, st.floats(0, 1), st.integers(0, 500), credits_st)
def test_allocation_sums_to_n_and_is_never_negative(
    prios: dict[str, float], min_share: float, n: int, credits: dict[str, float]
) -> None:
    share = shares(prios, min_share)
    split, carried = allocate(n, share, credits)
    assert all(k >= 0 for k in split.values())
    eligible = [c for c, s in share.items() if s > 0]
    assert sum(split.values()) == (n if eligible else 0)
    assert all(split[c] == 0 for c in share if c not in eligible)
    assert all(abs(v) <= CREDIT_CAP for v in carried.values())
    if eligible:
        assert math.fsum(share.values()) == pytest.approx(1.0)


@given(prios_st, st.floats(0, 1), st.integers(0, 500))
def test_min_share_is_honoured(prios: dict[str, float], min_share: float, n: int) -> None:
    share = shares(prios, min_share)
    eligible = [c for c, s in share.items() if s > 0]
    if not eligible:
        return
    floor = min(min_share, 1 / len(eligible))
    split, _ = allocate(n, share)
    for c in eligible:
        assert share[c] >= floor - 1e-9
        assert split[c] >= math.floor(n * floor - 1e-6)


@given(table_st, st.sampled_from(GAMES), st.integers(1, 200))
def test_overrides_are_respected(table: dict[str, GameInputs], game: str, n: int) -> None:
    stopped = {**table, game: replace(table[game], override=0.0)}
    share = shares(priorities(stopped, W, ELO_TARGET), 0.1)
    assert share[game] == 0 and allocate(n, share)[0][game] == 0
    others = {c: replace(i, override=1.0) for c, i in table.items()}
    favoured = {**others, game: replace(table[game], override=1e6)}
    split, _ = allocate(n, shares(priorities(favoured, W, ELO_TARGET), 0.1))
    assert all(split[game] >= k for k in split.values())


@given(table_st, st.sampled_from(GAMES), st.floats(0, 0.3), st.integers(0, 200))
def test_a_training_config_gets_less(
    table: dict[str, GameInputs], game: str, min_share: float, n: int
) -> None:
    idle = {**table, game: replace(table[game], in_training=False)}
    busy = {**table, game: replace(table[game], in_training=True)}
    p_idle, p_busy = priorities(idle, W, ELO_TARGET), priorities(busy, W, ELO_TARGET)
    assert p_busy[game] <= p_idle[game]
    if p_idle[game] > 0:
        assert p_busy[game] < p_idle[game]
    a_idle, _ = allocate(n, shares(p_idle, min_share))
    a_busy, _ = allocate(n, shares(p_busy, min_share))
    assert a_busy[game] <= a_idle[game]


# -- signals from events -------------------------------------------------------------
def started(t: str = "t1") -> TrainingStarted:
    return TrainingStarted(game="c", job_id=t, games=100)


def reject(candidate: str) -> EvaluationCompleted:
    return EvaluationCompleted(
        game="c",
        candidate=candidate,
        champion="m0",
        wins=1,
        losses=9,
        draws=0,
        llr=-3.0,
        decision="reject",
    )


def accept(candidate: str) -> EvaluationCompleted:
    return EvaluationCompleted(
        game="c",
        candidate=candidate,
        champion="m0",
        wins=9,
        losses=1,
        draws=0,
        llr=3.0,
        decision="accept",
    )


def replay(events: list[tuple[Any, float]]) -> GameSignals:
    s = GameSignals()
    for data, at in events:
        s = apply_one(s, data, at)
    return s


def test_training_starts_and_finishes() -> None:
    s = replay([(started(), 10.0)])
    assert s.in_training(now=20.0, stale_after_s=100) and s.training_job == "t1"
    assert not s.in_training(now=200.0, stale_after_s=100)  # silent too long
    done = apply_one(s, TrainingCompleted(game="c", job_id="t1", model_id="m1"), 30.0)
    assert not done.in_training(now=31.0, stale_after_s=100) and done.refreshed_at == 30.0
    failed = apply_one(s, TrainingFailed(game="c", job_id="t1", error="x"), 30.0)
    assert not failed.in_training(now=31.0, stale_after_s=100) and failed.refreshed_at is None


def test_a_late_redelivered_start_does_not_mark_a_finished_training_again() -> None:
    done = TrainingCompleted(game="c", job_id="t1", model_id="m1")
    s = replay([(done, 30.0), (started(), 10.0)])
    assert not s.in_training(now=31.0, stale_after_s=100)


def test_plateau_counts_distinct_rejections_and_resets_on_accept_or_promotion() -> None:
    assert replay([(reject("a"), 1.0), (reject("a"), 1.0), (reject("b"), 2.0)]).plateau == 2
    assert replay([(reject("a"), 1.0), (accept("b"), 2.0)]).plateau == 0
    assert replay([(accept("b"), 2.0), (reject("a"), 1.0)]).plateau == 0  # late: ignored
    promoted = ModelPromoted(game="c", model_id="m2", generation=2, elo=100.0)
    s = replay([(reject("a"), 1.0), (promoted, 3.0)])
    assert s.plateau == 0 and s.refreshed_at == 3.0


def test_apply_reports_no_change_for_a_redelivered_event() -> None:
    first = apply(Signals(), "c", reject("a"), 1.0)
    assert first is not None and first.games["c"].plateau == 1
    assert apply(first, "c", reject("a"), 1.0) is None
