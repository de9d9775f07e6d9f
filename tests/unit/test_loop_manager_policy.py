"""The loop manager's pure judgements: stream usage and loop problems."""

from __future__ import annotations

import pytest

from services.loop_manager.policy import (
    judge_stream_usage,
    loop_problems,
    usage_warnings,
)
from shared.loops import LoopStats

MiB = 1 << 20


@pytest.mark.parametrize(
    ("messages", "bytes_", "max_msgs", "max_bytes", "warn", "over", "msgs_ratio", "bytes_ratio"),
    [
        # nothing configured: JetStream reports -1, nothing can be "near" a limit
        (10, 5_000, -1, -1, 0.8, [], None, None),
        (10, 5_000, None, 0, 0.8, [], None, None),
        (0, 0, 100, MiB, 0.8, [], 0.0, 0.0),
        # exactly at the threshold is not above it
        (80, 0, 100, -1, 0.8, [], 0.8, None),
        (81, 0, 100, -1, 0.8, ["messages"], 0.81, None),
        (0, 900, -1, 1000, 0.8, ["bytes"], None, 0.9),
        (99, 999, 100, 1000, 0.8, ["bytes", "messages"], 0.99, 0.999),
        # a full stream (discard old keeps it at its limit)
        (100, 1000, 100, 1000, 1.0, [], 1.0, 1.0),
        (50, 600, 100, 1000, 0.5, ["bytes"], 0.5, 0.6),
    ],
)
def test_judge_stream_usage(
    messages: int,
    bytes_: int,
    max_msgs: int | None,
    max_bytes: int | None,
    warn: float,
    over: list[str],
    msgs_ratio: float | None,
    bytes_ratio: float | None,
) -> None:
    usage = judge_stream_usage(
        messages=messages,
        bytes_=bytes_,
        max_msgs=max_msgs,
        max_bytes=max_bytes,
        max_age_s=3600.0,
        warn=warn,
    )
    assert usage.over == over
    assert usage.msgs_ratio == pytest.approx(msgs_ratio)
    assert usage.bytes_ratio == pytest.approx(bytes_ratio)
    assert usage.max_age_s == 3600.0
    assert len(usage_warnings("P_EVENTS", usage)) == len(over)


def test_unlimited_limits_read_as_none() -> None:
    usage = judge_stream_usage(
        messages=1, bytes_=1, max_msgs=-1, max_bytes=-1, max_age_s=0.0, warn=0.8
    )
    assert (usage.max_msgs, usage.max_bytes, usage.max_age_s) == (None, None, None)


def test_warning_names_stream_and_figures() -> None:
    usage = judge_stream_usage(
        messages=5, bytes_=950, max_msgs=-1, max_bytes=1000, max_age_s=None, warn=0.8
    )
    (line,) = usage_warnings("P_EVENTS", usage)
    assert "P_EVENTS bytes at 95%" in line and "950/1000" in line and "80%" in line


@pytest.mark.parametrize(
    ("messages", "bytes_", "warn"),
    [(-1, 0, 0.8), (0, -1, 0.8), (0, 0, 0.0), (0, 0, 1.5)],
)
def test_judge_stream_usage_rejects_bad_input(messages: int, bytes_: int, warn: float) -> None:
    with pytest.raises(ValueError):
        judge_stream_usage(
            messages=messages, bytes_=bytes_, max_msgs=10, max_bytes=10, max_age_s=None, warn=warn
        )


def _stats(name: str, consecutive: int, error: str = "") -> LoopStats:
    return LoopStats(
        name=name,
        interval=1.0,
        runs=5,
        successes=5 - consecutive,
        failures=consecutive,
        timeouts=0,
        consecutive_failures=consecutive,
        last_error=error,
        last_run_at=None,
        last_duration_s=0.0,
        next_delay_s=1.0,
        paused=False,
        running=True,
    )


@pytest.mark.parametrize(
    ("consecutive", "warnings", "expected"),
    [
        (0, [], 0),
        (2, [], 0),  # below failures_degraded=3
        (3, [], 1),
        (0, ["stream nearly full"], 1),
        (4, ["a", "b"], 3),
    ],
)
def test_loop_problems(consecutive: int, warnings: list[str], expected: int) -> None:
    stats = [_stats("housekeeping", consecutive, "RuntimeError: boom"), _stats("other", 0)]
    results = {"housekeeping": {"warnings": warnings}, "other": {"x": 1}}
    problems = loop_problems(stats, results, failures_degraded=3)
    assert len(problems) == expected
    if consecutive >= 3:
        assert "RuntimeError: boom" in problems[0]
