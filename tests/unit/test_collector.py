"""Tests for shared.collector: parallel calls with per-call timeouts, never raising."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
import msgspec
import pytest

from shared.collector import Collector, CollectorStats, collect


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def fast() -> int:
    return 1


async def failing() -> int:
    raise ValueError("boom")


async def hanging() -> int:
    await anyio.sleep_forever()
    raise AssertionError("unreachable")


async def own_timeout() -> int:
    raise TimeoutError("the callee's own timeout")


def mixed() -> dict[str, Callable[[], Awaitable[int]]]:
    return {"hang": hanging, "fast": fast, "bad": failing}


@pytest.mark.anyio
async def test_fast_failing_and_hanging_calls() -> None:
    result = await collect(mixed(), timeout=0.05)
    assert result.values == {"fast": 1}
    assert result.timeouts == ["hang"]
    assert result.failures == {"bad": "ValueError: boom"}
    assert (result.succeeded, result.timed_out, result.failed) == (1, 1, 1)
    assert result.elapsed_s >= 0


@pytest.mark.anyio
async def test_a_callees_own_timeout_error_is_a_failure_not_a_timeout() -> None:
    result = await collect({"t": own_timeout}, timeout=5.0)
    assert result.timeouts == []
    assert result.failures == {"t": "TimeoutError: the callee's own timeout"}


@pytest.mark.anyio
async def test_results_keep_the_callers_order() -> None:
    def after(delay: float, value: int) -> Callable[[], Awaitable[int]]:
        async def call() -> int:
            await anyio.sleep(delay)
            return value

        return call

    calls = {"a": after(0.03, 1), "b": after(0.0, 2), "c": after(0.01, 3)}
    result = await collect(calls, timeout=5.0)
    assert list(result.values) == ["a", "b", "c"]
    assert result.values == {"a": 1, "b": 2, "c": 3}


@pytest.mark.anyio
async def test_limit_bounds_concurrency() -> None:
    active = peak = 0

    async def tracked() -> int:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await anyio.sleep(0.001)
        active -= 1
        return 0

    calls = {f"c{i}": tracked for i in range(10)}
    result = await collect(calls, timeout=5.0, limit=3)
    assert result.succeeded == 10
    assert peak <= 3


@pytest.mark.anyio
async def test_empty_round() -> None:
    empty: dict[str, Callable[[], Awaitable[int]]] = {}
    result = await collect(empty, timeout=1.0)
    assert (result.values, result.timeouts, result.failures) == ({}, [], {})
    assert (result.succeeded, result.timed_out, result.failed) == (0, 0, 0)


@pytest.mark.anyio
async def test_cancelling_the_caller_propagates() -> None:
    with anyio.move_on_after(0.02) as scope:
        await collect({"hang": hanging}, timeout=60.0)
    assert scope.cancelled_caught


@pytest.mark.anyio
async def test_collector_keeps_totals_across_rounds() -> None:
    collector: Collector[int] = Collector("metrics", timeout=0.05)
    assert collector.stats().rounds == 0
    await collector.run(mixed())
    await collector.run({"fast": fast})
    stats = collector.stats()
    assert (stats.rounds, stats.calls) == (2, 4)
    assert (stats.successes, stats.timeouts, stats.failures) == (2, 1, 1)
    assert (stats.last_succeeded, stats.last_timed_out, stats.last_failed) == (1, 0, 0)
    assert stats.last_round_at is not None
    assert msgspec.json.decode(msgspec.json.encode(stats), type=CollectorStats) == stats


@pytest.mark.anyio
async def test_result_encodes_to_json() -> None:
    result = await collect(mixed(), timeout=0.05)
    decoded = msgspec.json.decode(msgspec.json.encode(result))
    assert decoded["values"] == {"fast": 1}
    assert decoded["timeouts"] == ["hang"]


@pytest.mark.anyio
@pytest.mark.parametrize("kwargs", [{"timeout": 0.0}, {"timeout": 1.0, "limit": 0}])
async def test_invalid_settings_are_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        await collect({"fast": fast}, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Collector("x", **kwargs)  # type: ignore[arg-type]
