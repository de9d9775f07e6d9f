"""The one liveness rule (shared.liveness), on an explicit clock."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.liveness import LOST_AFTER, SUSPECT_AFTER, Liveness, LivenessRule, heard_at

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
