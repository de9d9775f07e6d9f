"""The one liveness rule (shared.liveness), on an explicit clock."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.job_manager.index import JobIndex
from services.orchestrator.cluster_view import ClusterView
from services.training_coordinator.nodes import AliveNodes
from shared.liveness import LOST_AFTER, SUSPECT_AFTER, Liveness, LivenessRule, heard_at
from shared.subjects import Subjects
from shared.testing.builders import node_info

A = Liveness.ALIVE
S = Liveness.SUSPECT
L = Liveness.LOST


@pytest.mark.parametrize(
    ("silent", "interval", "expected"),
    [
        (0.0, 1.0, A),
        (2.0, 1.0, A),  # the marks are "past": exactly 2 intervals is still ALIVE
        (2.01, 1.0, S),
        (3.0, 1.0, S),
        (3.01, 1.0, L),
        (5.0, 2.0, S),  # counted in the announcer's own interval
        (6.5, 2.0, L),
    ],
)
def test_silence_in_intervals(silent: float, interval: float, expected: Liveness) -> None:
    assert LivenessRule().state(100.0, 100.0 + silent, interval) is expected
    assert LivenessRule().alive(100.0, 100.0 + silent, interval) is (expected is not L)


def test_a_lost_mark_in_seconds_ignores_the_interval_and_keeps_suspect_at_its_share() -> None:
    rule = LivenessRule(lost_after_s=6.0)
    assert rule.lost_mark(0.1) == rule.lost_mark(10.0) == 6.0
    assert rule.state(0.0, 4.0, 10.0) is A
    assert rule.state(0.0, 4.1, 10.0) is S  # 2/3 of the LOST mark
    assert rule.state(0.0, 6.1, 10.0) is L


def test_a_lost_mark_in_intervals() -> None:
    rule = LivenessRule(lost_after=3.5)
    assert rule.state(0.0, 3.5, 1.0) is S and rule.state(0.0, 3.6, 1.0) is L


def test_the_defaults_are_the_design_rule() -> None:
    assert (SUSPECT_AFTER, LOST_AFTER) == (2.0, 3.0)
    assert LivenessRule().lost_mark(1.0) == 3.0


@pytest.mark.parametrize("bad", [{"lost_after": 0.0}, {"lost_after_s": -1.0}])
def test_a_lost_mark_must_follow_some_silence(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="LOST mark"):
        LivenessRule(**bad)


def test_an_age_from_another_host_converts_once_and_skew_counts_as_now() -> None:
    assert heard_at(50.0, 1.5) == 48.5
    assert heard_at(50.0, -3.0) == 50.0


@given(
    last=st.floats(0, 1e6),
    a=st.floats(0, 1e3),
    b=st.floats(0, 1e3),
    interval=st.floats(0.01, 60),
)
def test_silence_only_makes_things_worse(last: float, a: float, b: float, interval: float) -> None:
    order = {A: 0, S: 1, L: 2}
    rule = LivenessRule()
    early, late = sorted((a, b))
    assert (
        order[rule.state(last, last + early, interval)]
        <= order[rule.state(last, last + late, interval)]
    )


# -- the places that judge nodes use it, on the clock they are given ------------------


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_the_training_coordinator_counts_nodes_by_the_rule() -> None:
    clock = Clock(100.0)
    nodes = AliveNodes(LivenessRule(lost_after_s=5.0), Counter(), clock=clock)
    nodes.saw(node_info("a", interval_s=1.0))
    clock.now = 105.0
    assert nodes.count() == 1
    clock.now = 105.1
    assert nodes.count() == 0


def test_the_status_view_marks_nodes_by_the_rule() -> None:
    clock = Clock(10.0)
    view = ClusterView(Subjects("t"), clock=clock)
    view.observe_node(node_info("a", interval_s=2.0))
    clock.now = 16.0  # 3 intervals: SUSPECT, still alive
    assert [(n.node, n.alive) for n in view.nodes()] == [("a", True)]
    clock.now = 16.1
    assert [(n.node, n.alive) for n in view.nodes()] == [("a", False)]


def test_the_job_manager_loses_a_node_only_once_heard() -> None:
    index = JobIndex()
    rule = LivenessRule(lost_after_s=5.0)
    assert not index.node_lost("ghost", rule, now=1e6)
    index.saw_node("a", at=50.0)
    assert not index.node_lost("a", rule, now=55.0)
    assert index.node_lost("a", rule, now=55.1)
