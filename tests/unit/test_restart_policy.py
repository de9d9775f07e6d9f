"""Tests for services.orchestrator.restart: policies, backoff, intensity limit, reset."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.orchestrator.restart import (
    Decision,
    RestartLimits,
    RestartState,
    backoff_delay,
    decide,
    describe_exit,
    is_abnormal,
    should_restart,
)
from shared.cluster import ClusterSettings, RestartPolicy

LIMITS = RestartLimits()  # 5 restarts in 60 s, 0.5 s base, cap 30 s, ±20 %


def crash_loop(
    count: int,
    *,
    gap: float = 1.0,
    uptime: float = 0.1,
    policy: RestartPolicy = "permanent",
    code: int | None = 1,
    limits: RestartLimits = LIMITS,
    seed: int = 0,
) -> list[Decision]:
    """``count`` exits, ``gap`` seconds apart, each after ``uptime`` seconds of running."""
    rng = random.Random(seed)
    state = RestartState()
    decisions = []
    for i in range(count):
        now = 1000.0 + i * gap
        d = decide(policy, code, state, now=now, started_at=now - uptime, limits=limits, rng=rng)
        decisions.append(d)
        state = d.state
    return decisions


@pytest.mark.parametrize(
    ("policy", "code", "expected"),
    [
        ("permanent", 0, True),
        ("permanent", 1, True),
        ("permanent", -9, True),
        ("permanent", None, True),
        ("transient", 0, False),
        ("transient", 1, True),
        ("transient", -9, True),
        ("transient", -15, True),
        ("transient", None, True),
        ("temporary", 0, False),
        ("temporary", 1, False),
        ("temporary", -9, False),
    ],
)
def test_should_restart(policy: RestartPolicy, code: int | None, expected: bool) -> None:
    assert should_restart(policy, code) is expected
    assert is_abnormal(code) is (code != 0)


@pytest.mark.parametrize(
    ("code", "words"),
    [(0, "exit code 0"), (3, "exit code 3"), (-9, "killed by SIGKILL"), (None, "did not start")],
)
def test_describe_exit(code: int | None, words: str) -> None:
    assert describe_exit(code) == words


@pytest.mark.parametrize(
    ("attempt", "low", "high"),
    [(1, 0.0, 0.0), (2, 0.4, 0.6), (3, 0.8, 1.2), (4, 1.6, 2.4), (5, 3.2, 4.8), (10, 30, 30)],
)
def test_backoff_doubles_within_jitter_up_to_the_cap(attempt: int, low: float, high: float) -> None:
    for seed in range(20):
        assert low <= backoff_delay(attempt, LIMITS, random.Random(seed)) <= high


def test_five_crashes_in_the_period_are_restarted_the_sixth_gives_up() -> None:
    decisions = crash_loop(6)
    assert [d.action for d in decisions] == ["restart"] * 5 + ["give_up"]
    assert [d.in_window for d in decisions] == [1, 2, 3, 4, 5, 5]
    assert decisions[0].delay_s == 0.0
    assert all(d.delay_s > 0 for d in decisions[1:5])


def test_restarts_older_than_the_period_stop_counting() -> None:
    # 61 s apart: every restart is the first in its window, so immediate, forever.
    decisions = crash_loop(20, gap=61.0)
    assert all(d.action == "restart" and d.delay_s == 0.0 for d in decisions)


def test_a_stable_run_starts_afresh() -> None:
    state = crash_loop(5)[-1].state
    assert len(state.times) == 5
    rng = random.Random(1)
    # Exits 5 s after the last restart, having run only 4 s: still in the window.
    short = decide("permanent", 1, state, now=1009.0, started_at=1005.0, limits=LIMITS, rng=rng)
    assert short.action == "give_up"
    # The same instant, but it ran for 61 s (> period): history cleared, immediate restart.
    stable = decide("permanent", 1, state, now=1009.0, started_at=948.0, limits=LIMITS, rng=rng)
    assert (stable.action, stable.delay_s, stable.in_window) == ("restart", 0.0, 1)


def test_not_wanted_back_is_stop_and_keeps_the_window() -> None:
    state = crash_loop(2)[-1].state
    d = decide(
        "transient", 0, state, now=1002.0, started_at=1001.5, limits=LIMITS, rng=random.Random(0)
    )
    assert (d.action, d.state, d.in_window) == ("stop", state, 2)
    assert crash_loop(1, policy="temporary", code=-9)[0].action == "stop"


def test_limits_from_cluster_settings() -> None:
    settings = ClusterSettings(restart_intensity=2, restart_period_s=10, max_restart_delay_s=1)
    limits = RestartLimits.from_settings(settings)
    assert (limits.intensity, limits.period_s, limits.max_delay_s) == (2, 10, 1)
    assert [d.action for d in crash_loop(3, limits=limits)] == ["restart", "restart", "give_up"]


@given(
    attempt=st.integers(min_value=1, max_value=10_000),
    cap=st.floats(min_value=0.01, max_value=3600),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_delay_never_exceeds_the_cap(attempt: int, cap: float, seed: int) -> None:
    limits = RestartLimits(max_delay_s=cap)
    assert 0.0 <= backoff_delay(attempt, limits, random.Random(seed)) <= cap


@given(
    policy=st.sampled_from(["permanent", "transient"]),
    code=st.integers(min_value=-64, max_value=255).filter(lambda c: c != 0),
    seed=st.integers(min_value=0, max_value=2**32),
    now=st.floats(min_value=0, max_value=1e9),
)
def test_first_restart_is_immediate(
    policy: RestartPolicy, code: int, seed: int, now: float
) -> None:
    d = decide(
        policy,
        code,
        RestartState(),
        now=now,
        started_at=now,
        limits=LIMITS,
        rng=random.Random(seed),
    )
    assert (d.action, d.delay_s, d.state.times) == ("restart", 0.0, (now,))


@given(
    intensity=st.integers(min_value=1, max_value=20),
    gap=st.floats(min_value=0.0, max_value=60.0 / 21),
    seed=st.integers(min_value=0, max_value=1000),
)
def test_more_than_intensity_crashes_in_the_period_give_up(
    intensity: int, gap: float, seed: int
) -> None:
    limits = RestartLimits(intensity=intensity)
    decisions = crash_loop(intensity + 1, gap=gap, uptime=0.0, limits=limits, seed=seed)
    assert [d.action for d in decisions] == ["restart"] * intensity + ["give_up"]
    assert all(d.delay_s <= limits.max_delay_s for d in decisions)


def test_giving_up_is_not_final_it_retries_at_the_cap() -> None:
    give_up = crash_loop(6)[-1]
    assert (give_up.action, give_up.delay_s) == ("give_up", LIMITS.max_delay_s)
