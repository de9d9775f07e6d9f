"""Tests for shared.loops.Loop: backoff, timeouts, pause/resume/trigger, cancellation."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable

import anyio
import msgspec
import pytest

from shared.loops import Loop, LoopStats

# A generous ceiling so a broken loop fails the test instead of hanging it; never a
# measure of speed.
GUARD = 10.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Calls:
    """A loop function that counts its calls and lets a test wait for the n-th one."""

    def __init__(self, fail_first: int = 0, hook: Callable[[], None] | None = None) -> None:
        self.count = 0
        self.fail_first = fail_first
        self.hook = hook
        self._waiters: list[tuple[int, anyio.Event]] = []

    async def __call__(self) -> None:
        self.count += 1
        if self.hook is not None:
            self.hook()
        for n, event in self._waiters:
            if self.count >= n:
                event.set()
        if self.count <= self.fail_first:
            raise ValueError(f"failure {self.count}")

    async def reached(self, n: int) -> None:
        event = anyio.Event()
        self._waiters.append((n, event))
        if self.count >= n:
            event.set()
        with anyio.fail_after(GUARD):
            await event.wait()


@pytest.mark.anyio
async def test_backoff_grows_caps_and_resets_on_success() -> None:
    delays: list[float] = []
    done = anyio.Event()
    loop: Loop

    async def func() -> None:
        # The delay the loop chose after the previous call.
        delays.append(loop.stats().next_delay_s)
        if len(delays) == 7:
            done.set()
        if len(delays) <= 4:
            raise RuntimeError("down")

    loop = Loop("b", func, interval=0.01, jitter=0, max_backoff=0.05, backoff_factor=2.0)
    async with anyio.create_task_group() as tg:
        await tg.start(loop.run)
        with anyio.fail_after(GUARD):
            await done.wait()
        tg.cancel_scope.cancel()
    # First call has no previous delay; then 0.02, 0.04, capped 0.05, 0.05; reset 0.01.
    assert delays[1:] == pytest.approx([0.02, 0.04, 0.05, 0.05, 0.01, 0.01])
    stats = loop.stats()
    assert stats.failures == 4
    assert stats.successes >= 3
    assert stats.consecutive_failures == 0


@pytest.mark.anyio
async def test_base_delay_follows_consecutive_failures() -> None:
    func = Calls(fail_first=3)
    loop = Loop("d", func, interval=1.0, jitter=0, max_backoff=5.0, backoff_factor=3.0)
    assert loop.base_delay() == 1.0
    for expected in (3.0, 5.0, 5.0):
        assert await loop.run_once() is False
        assert loop.base_delay() == expected
    assert await loop.run_once() is True
    assert loop.base_delay() == 1.0


@pytest.mark.anyio
async def test_timeout_counts_as_failure() -> None:
    errors: list[tuple[str, BaseException]] = []

    async def hang() -> None:
        await anyio.sleep_forever()

    loop = Loop("t", hang, interval=1.0, timeout=0.01, on_error=lambda n, e: errors.append((n, e)))
    assert await loop.run_once() is False
    stats = loop.stats()
    assert (stats.runs, stats.timeouts, stats.failures, stats.successes) == (1, 1, 1, 0)
    assert stats.consecutive_failures == 1
    assert stats.last_error.startswith("TimeoutError")
    assert stats.last_run_at is not None
    assert errors and errors[0][0] == "t" and isinstance(errors[0][1], TimeoutError)


@pytest.mark.anyio
async def test_errors_never_stop_the_loop_and_log_once_per_type(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[str] = []
    func = Calls(fail_first=1000)

    def on_error(name: str, exc: BaseException) -> None:
        seen.append(type(exc).__name__)
        raise RuntimeError("a broken callback must not kill the loop either")

    loop = Loop("e", func, interval=0.01, jitter=0, max_backoff=0.01, on_error=on_error)
    with caplog.at_level(logging.DEBUG, logger="shared.loops"):
        async with anyio.create_task_group() as tg:
            await tg.start(loop.run)
            await func.reached(5)
            tg.cancel_scope.cancel()
    assert loop.stats().failures >= 5
    assert seen[:5] == ["ValueError"] * 5
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "failed" in r.msg]
    assert len(warnings) == 1


@pytest.mark.anyio
async def test_cancellation_propagates_and_is_not_a_failure() -> None:
    entered = anyio.Event()

    async def hang() -> None:
        entered.set()
        await anyio.sleep_forever()

    loop = Loop("c", hang, interval=0.01)
    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            await tg.start(loop.run)
            assert loop.stats().running
            await entered.wait()
            tg.cancel_scope.cancel()
    stats = loop.stats()
    assert stats.running is False
    assert (stats.failures, stats.timeouts, stats.successes) == (0, 0, 0)

    with anyio.move_on_after(0.01) as scope:
        await loop.run_once()
    assert scope.cancelled_caught
    assert loop.stats().failures == 0


@pytest.mark.anyio
async def test_pause_trigger_resume() -> None:
    func = Calls()
    loop = Loop("p", func, interval=0.01, jitter=0)
    loop.pause()
    assert loop.paused
    async with anyio.create_task_group() as tg:
        await tg.start(loop.run)
        await anyio.sleep(0.05)
        assert func.count == 0  # paused from the start: no scheduled run

        loop.trigger()  # runs once even while paused
        await func.reached(1)
        await anyio.sleep(0.05)
        assert func.count == 1
        assert loop.stats().paused

        loop.resume()
        assert not loop.paused
        await func.reached(4)
        loop.pause()
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_trigger_cuts_a_long_wait_short() -> None:
    func = Calls()
    loop = Loop("w", func, interval=3600.0, max_backoff=3600.0, run_at_start=False)
    async with anyio.create_task_group() as tg:
        await tg.start(loop.run)
        assert func.count == 0
        assert loop.stats().next_delay_s > 3000
        loop.trigger()
        await func.reached(1)
        loop.trigger()
        await func.reached(2)
        tg.cancel_scope.cancel()
    assert loop.stats().runs == 2


@pytest.mark.anyio
async def test_jitter_stays_within_its_fraction() -> None:
    delays: list[float] = []
    loop: Loop
    func = Calls(hook=lambda: delays.append(loop.stats().next_delay_s))
    loop = Loop("j", func, interval=0.01, jitter=0.5, rng=random.Random(7))
    async with anyio.create_task_group() as tg:
        await tg.start(loop.run)
        await func.reached(8)
        tg.cancel_scope.cancel()
    assert all(0.005 <= d <= 0.015 for d in delays[1:])
    assert len(set(delays[1:])) > 1


@pytest.mark.anyio
async def test_run_twice_is_refused() -> None:
    func = Calls()
    loop = Loop("r", func, interval=1.0)
    async with anyio.create_task_group() as tg:
        await tg.start(loop.run)
        with pytest.raises(RuntimeError, match="already running"):
            await loop.run()
        tg.cancel_scope.cancel()


def test_stats_encode_to_json() -> None:
    func = Calls()
    stats = Loop("s", func, interval=2.0).stats()
    decoded = msgspec.json.decode(msgspec.json.encode(stats), type=LoopStats)
    assert decoded == stats
    assert decoded.name == "s" and decoded.interval == 2.0 and decoded.last_run_at is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"interval": 0},
        {"interval": 1.0, "jitter": 1.0},
        {"interval": 1.0, "timeout": 0},
        {"interval": 1.0, "backoff_factor": 0.5},
        {"interval": 10.0, "max_backoff": 1.0},
    ],
)
def test_invalid_settings_are_rejected(kwargs: dict[str, float]) -> None:
    func = Calls()
    with pytest.raises(ValueError):
        Loop("x", func, **kwargs)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_each_loop_measures_what_its_runs_cost() -> None:
    def spin() -> None:
        # Busy for a few milliseconds of CPU, so the thread's CPU clock moves.
        end = time.thread_time() + 0.005
        while time.thread_time() < end:
            pass

    async def func() -> None:
        spin()
        await anyio.sleep(0.01)

    loop = Loop("costly", func, interval=1.0)
    assert await loop.run_once() and await loop.run_once()
    stats = loop.stats()
    assert stats.runs == 2
    assert stats.total_duration_s >= 2 * 0.01
    assert stats.total_duration_s >= stats.last_duration_s
    assert stats.cpu_s >= 2 * 0.005
    decoded = msgspec.json.decode(msgspec.json.encode(stats), type=LoopStats)
    assert decoded.cpu_s == stats.cpu_s
