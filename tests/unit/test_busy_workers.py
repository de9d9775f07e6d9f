"""Keeping the workers busy: backlog, job sizing, slot accounting, held-job priority."""

from __future__ import annotations

from collections import Counter

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.gaps import Span, gaps, summarize
from services.job_manager import policy as jm_policy
from services.node_agent.pools import dispatch_priority
from services.node_agent.slots import SlotGaps, Utilization
from services.selfplay_scheduler.config import SelfplaySchedulerConfig
from services.selfplay_scheduler.policy import (
    MAX_SIZE_STEP,
    games_per_job,
    observe_pace,
    target,
    total_slots,
)
from services.selfplay_scheduler.sizing import Sizer
from shared.codec import encode
from shared.events import JobCompleted
from shared.jobs import JobDispatch, JobRecord, JobSpec, JobState
from shared.testing.builders import node_info

T0 = 1_700_000_000.0

# -- the backlog ------------------------------------------------------------------------


def test_backlog_covers_every_slot_not_only_the_free_ones() -> None:
    # Two busy slots: the old rule queued only the buffer, so each freed slot waited.
    assert target(free=0, buffer=1, nodes_alive=2, slots=2, per_slot=1) == 3
    assert target(free=0, buffer=0, nodes_alive=2, slots=2, per_slot=2) == 4
    # Free slots beyond the backlog still count, and nothing without a live node.
    assert target(free=5, buffer=1, nodes_alive=1, slots=2, per_slot=1) == 6
    assert target(free=0, buffer=1, nodes_alive=0, slots=2, per_slot=1) == 0


def test_total_slots_adds_every_node() -> None:
    nodes = [node_info("a", slots=2, free_slots=0), node_info("b", slots=3, free_slots=1)]
    assert total_slots(nodes) == 5


# -- job sizing -------------------------------------------------------------------------


def test_pace_is_a_moving_average_and_ignores_empty_jobs() -> None:
    assert observe_pace(None, 100, 2.0) == pytest.approx(0.02)
    assert observe_pace(0.02, 100, 4.0) == pytest.approx(0.7 * 0.02 + 0.3 * 0.04)
    assert observe_pace(0.02, 0, 4.0) == 0.02
    assert observe_pace(None, 10, 0.0) is None


def test_size_before_any_observation_is_the_configured_one() -> None:
    assert games_per_job(None, 30.0, 200, None, 10_000) == 200
    assert games_per_job(None, 30.0, 200, None, 50) == 50


def test_size_steps_are_bounded_and_capped() -> None:
    # 0.01 s a game for a 30 s job wants 3000 games; from 100 the step is at most 4x.
    assert games_per_job(0.01, 30.0, 100, 100, 100_000) == 100 * MAX_SIZE_STEP
    assert games_per_job(0.01, 30.0, 100, 2000, 100_000) == 3000
    assert games_per_job(0.01, 30.0, 100, 2000, 2500) == 2500
    assert games_per_job(100.0, 30.0, 100, 1, 100) == 1


@given(
    fixed=st.floats(0.05, 2.0),
    per_game=st.floats(1e-4, 0.5),
    target_s=st.floats(5.0, 60.0),
    first=st.integers(1, 500),
)
def test_sizing_converges_to_the_size_whose_run_is_the_target(
    fixed: float, per_game: float, target_s: float, first: int
) -> None:
    """A run of ``fixed + n * per_game`` seconds: sizes settle where the run is the target."""
    pace: float | None = None
    size: int | None = None
    n = first
    # Slowest when the fixed cost is a big share of the target (each step then closes
    # only part of the gap, through the moving average): 200 jobs cover every case here.
    for _ in range(200):
        pace = observe_pace(pace, n, fixed + n * per_game)
        n = size = games_per_job(pace, target_s, first, size, 10**9)
    ideal = max(1.0, (target_s - fixed) / per_game)
    run = fixed + n * per_game
    assert n == pytest.approx(ideal, rel=0.05, abs=1.0) or run == pytest.approx(target_s, rel=0.05)


def completed(game: str, games: object, run_s: float, kind: str = "selfplay") -> JobCompleted:
    return JobCompleted(
        job_id="j",
        type="selfplay",
        attempt=1,
        node_id="n",
        result={"games": games},
        labels={"kind": kind, "game": game},
        run_s=run_s,
    )


def test_sizer_learns_per_config_from_selfplay_completions_only() -> None:
    counts: Counter[str] = Counter()
    sizer = Sizer(counts)
    cfg = SelfplaySchedulerConfig(target_job_s=10.0, games_per_job={"a": 50, "b": 20})
    assert sizer.games("a", cfg) == 50
    assert sizer.observe(completed("a", 50, 0.5))  # 0.01 s a game: 1000 wanted
    assert not sizer.observe(completed("a", 50, 0.5, kind="evaluate"))
    assert not sizer.observe(completed("a", "many", 0.5))
    assert not sizer.observe(completed("a", True, 0.5))
    assert sizer.games("a", cfg) == 200  # 4x the last size at most
    assert sizer.games("a", cfg) == 800
    assert sizer.games("a", cfg) == 1000
    assert sizer.games("b", cfg) == 20  # never observed: its configured size
    assert counts["durations_observed"] == 1 and counts["durations_unusable"] == 2
    assert sizer.view(cfg)["a"]["games_per_job"] == 1000


# -- the reaper and queued pool work ----------------------------------------------------


def dispatched(pool: str, node: str = "") -> JobRecord:
    return JobRecord(
        job_id="j1",
        spec=JobSpec(type="selfplay"),
        state=JobState.DISPATCHED,
        attempt=1,
        fencing=1,
        node_id=node,
        pool=pool,
        submitted_at=T0,
        updated_at=T0,
    )


@pytest.mark.parametrize(
    ("pool", "node", "age", "failed"),
    [
        ("cap.selfplay", "", 120.0, False),  # queued behind the backlog: normal
        ("cap.selfplay", "", 3601.0, True),  # lost for an hour: fail, retry
        ("node.n1", "n1", 61.0, True),  # pinned and never started
        ("node.n1", "n1", 59.0, False),
    ],
)
def test_queued_pool_work_is_not_failed_as_not_started(
    pool: str, node: str, age: float, failed: bool
) -> None:
    action = jm_policy.reap_action(
        dispatched(pool, node),
        T0 + age,
        False,
        dispatch_timeout_s=60.0,
        lease_s=30.0,
        pooled_dispatch_timeout_s=3600.0,
    )
    assert (action == jm_policy.Reap("fail", "not started")) is failed


# -- slots: utilization and gaps --------------------------------------------------------


def test_utilization_integrates_busy_slot_seconds_over_the_window() -> None:
    u = Utilization(60.0, now=0.0)
    u.set(1, 0.0)
    u.set(0, 30.0)
    assert u.share(1, 60.0) == pytest.approx(0.5)
    assert u.share(2, 60.0) == pytest.approx(0.25)
    u.set(2, 60.0)
    # Window (30, 90]: idle 30..60, both slots busy 60..90.
    assert u.share(2, 90.0) == pytest.approx(0.5)
    assert u.share(0, 90.0) == 0.0


def test_utilization_of_a_young_node_counts_only_its_life() -> None:
    u = Utilization(60.0, now=100.0)
    u.set(1, 100.0)
    assert u.share(1, 110.0) == pytest.approx(1.0)


def test_slot_gaps_count_only_waits_with_work_held() -> None:
    g = SlotGaps()
    assert g.view() == {"count": 0, "p50_ms": None, "p99_ms": None}
    g.freed(10.0, queued=True)
    g.started(10.02)
    g.freed(20.0, queued=False)  # nothing was queued: idle for want of work
    g.started(25.0)
    g.started(30.0)  # a fresh slot: no gap
    assert list(g.gaps) == [pytest.approx(0.02)]
    assert g.view()["p50_ms"] == pytest.approx(20.0)


# -- held dispatches: priority ----------------------------------------------------------


def test_dispatch_priority_reads_the_spec_and_never_raises() -> None:
    d = JobDispatch(
        job_id="j", attempt=1, fencing=1, spec=JobSpec(type="train", priority=10), dispatched_at=T0
    )
    assert dispatch_priority(encode(d)) == 10
    assert dispatch_priority(b"not json") == 0
    assert dispatch_priority(msgspec.json.encode({"spec": {"priority": "high"}})) == 0


# -- the bench's reading of job records -------------------------------------------------


def test_record_gaps_pair_each_start_with_the_slot_that_freed_first() -> None:
    runs = [
        Span("n", 0.0, 10.0, "selfplay", 5),
        Span("n", 10.5, 20.0, "selfplay", 5),
        Span("n", 19.9, 30.0, "selfplay", 5),  # overlaps the last one's upload: gap 0
    ]
    assert gaps(runs, slots=1) == [pytest.approx(0.5), 0.0]
    s = summarize(runs)
    assert s.games == 15 and s.gap_s_p50 == pytest.approx(0.0)
