"""Tests for shared.circuit_breaker: the whole state machine on a fake clock."""

from __future__ import annotations

import pickle
import random

import anyio
import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.circuit_breaker import (
    BreakerSnapshot,
    BreakerState,
    CircuitBreaker,
    CircuitOpenError,
)
from shared.errors import Unavailable


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def ok() -> str:
    return "ok"


async def boom() -> str:
    raise ConnectionError("down")


def breaker(clock: FakeClock, **kwargs: float) -> CircuitBreaker:
    settings: dict[str, float] = {"failure_threshold": 3, "recovery_timeout": 10.0, "jitter": 0}
    settings.update(kwargs)
    return CircuitBreaker("dep", clock=clock, **settings)  # type: ignore[arg-type]


def state_of(cb: CircuitBreaker) -> BreakerState:
    # A call, not an attribute, so the type checker does not narrow it between asserts.
    return cb.state


async def trip(cb: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        with pytest.raises(ConnectionError):
            await cb.call(boom)


@pytest.mark.anyio
async def test_closed_to_open_after_threshold_consecutive_failures() -> None:
    clock = FakeClock()
    cb = breaker(clock)
    await trip(cb, 2)
    assert await cb.call(ok) == "ok"  # a success resets the consecutive count
    await trip(cb, 2)
    assert state_of(cb) is BreakerState.CLOSED
    await trip(cb, 1)
    assert state_of(cb) is BreakerState.OPEN
    snap = cb.snapshot()
    assert (snap.failures, snap.consecutive_failures, snap.successes) == (5, 3, 1)
    assert snap.opened_at is not None
    assert snap.retry_in_s == pytest.approx(10.0)


@pytest.mark.anyio
async def test_open_rejects_without_calling() -> None:
    clock = FakeClock()
    cb = breaker(clock)
    await trip(cb, 3)
    called = False

    async def spy() -> None:
        nonlocal called
        called = True

    clock.advance(4.0)
    with pytest.raises(CircuitOpenError) as info:
        await cb.call(spy)
    assert not called
    assert info.value.name == "dep"
    assert info.value.retry_in_s == pytest.approx(6.0)
    assert isinstance(info.value, Unavailable) and info.value.code == 503
    assert not cb.allow()
    assert cb.snapshot().rejected == 2


@pytest.mark.anyio
async def test_half_open_success_closes() -> None:
    clock = FakeClock()
    cb = breaker(clock)
    await trip(cb, 3)
    clock.advance(9.999)
    assert state_of(cb) is BreakerState.OPEN
    clock.advance(0.001)
    assert state_of(cb) is BreakerState.HALF_OPEN
    assert await cb.call(ok) == "ok"
    assert state_of(cb) is BreakerState.CLOSED
    assert cb.snapshot().consecutive_failures == 0
    await trip(cb, 2)  # a fresh count: two failures do not reopen it
    assert state_of(cb) is BreakerState.CLOSED


@pytest.mark.anyio
async def test_half_open_failure_reopens_with_a_fresh_timeout() -> None:
    clock = FakeClock()
    cb = breaker(clock)
    await trip(cb, 3)
    first_opened = cb.snapshot().opened_at
    clock.advance(10.0)
    await trip(cb, 1)  # one failure in HALF_OPEN is enough
    assert state_of(cb) is BreakerState.OPEN
    snap = cb.snapshot()
    assert snap.retry_in_s == pytest.approx(10.0)
    assert first_opened is not None and snap.opened_at is not None
    assert snap.opened_at >= first_opened


@pytest.mark.anyio
async def test_half_open_limits_concurrent_trials() -> None:
    clock = FakeClock()
    cb = breaker(clock, half_open_max_calls=2)
    await trip(cb, 3)
    clock.advance(10.0)
    release = anyio.Event()
    results: list[str] = []

    async def slow() -> str:
        await release.wait()
        return "slow"

    async def trial() -> None:
        results.append(await cb.call(slow))

    async with anyio.create_task_group() as tg:
        tg.start_soon(trial)
        tg.start_soon(trial)
        await anyio.wait_all_tasks_blocked()
        assert cb.snapshot().half_open_in_flight == 2
        with pytest.raises(CircuitOpenError):
            await cb.call(ok)  # a third concurrent trial is refused
        release.set()
    assert results == ["slow", "slow"]
    assert state_of(cb) is BreakerState.CLOSED
    assert cb.snapshot().rejected == 1


@pytest.mark.anyio
async def test_cancellation_is_not_a_failure_and_frees_the_trial_slot() -> None:
    clock = FakeClock()
    cb = breaker(clock, failure_threshold=1)

    async def hang() -> None:
        await anyio.sleep_forever()

    with anyio.move_on_after(0.01):
        await cb.call(hang)
    assert state_of(cb) is BreakerState.CLOSED
    assert cb.snapshot().failures == 0

    await trip(cb, 1)
    clock.advance(10.0)
    with anyio.move_on_after(0.01):
        await cb.call(hang)
    snap = cb.snapshot()
    assert snap.state is BreakerState.HALF_OPEN
    assert (snap.failures, snap.half_open_in_flight) == (1, 0)
    assert await cb.call(ok) == "ok"  # the slot is free again
    assert state_of(cb) is BreakerState.CLOSED


def test_allow_and_record_for_callers_that_cannot_wrap() -> None:
    clock = FakeClock()
    cb = breaker(clock, failure_threshold=2)
    assert cb.allow()
    cb.record_failure()
    assert cb.allow()
    cb.record_failure()
    assert state_of(cb) is BreakerState.OPEN
    assert not cb.allow()
    clock.advance(10.0)
    assert cb.allow()  # takes the one trial slot
    assert not cb.allow()
    cb.release()  # cancelled: slot back, no verdict
    assert state_of(cb) is BreakerState.HALF_OPEN
    assert cb.allow()
    cb.record_success()
    assert state_of(cb) is BreakerState.CLOSED
    assert cb.snapshot().rejected == 2


@given(
    recovery=st.floats(min_value=0.1, max_value=1000.0),
    jitter=st.floats(min_value=0.0, max_value=0.99),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_recovery_jitter_stays_within_bounds(recovery: float, jitter: float, seed: int) -> None:
    clock = FakeClock()
    cb = CircuitBreaker(
        "j",
        failure_threshold=1,
        recovery_timeout=recovery,
        jitter=jitter,
        clock=clock,
        rng=random.Random(seed),
    )
    cb.record_failure()
    retry = cb.snapshot().retry_in_s
    low, high = recovery * (1 - jitter), recovery * (1 + jitter)
    assert low - 1e-9 <= retry <= high + 1e-9
    clock.advance(high + 1e-6)
    assert state_of(cb) is BreakerState.HALF_OPEN


@given(
    ops=st.lists(st.sampled_from(["ok", "fail", "tick", "wait"]), max_size=60),
    threshold=st.integers(min_value=1, max_value=4),
)
def test_state_machine_matches_a_model(ops: list[str], threshold: int) -> None:
    """Drive allow/record with a fake clock and compare with a tiny reference model."""
    clock = FakeClock()
    cb = CircuitBreaker(
        "m", failure_threshold=threshold, recovery_timeout=5.0, jitter=0, clock=clock
    )
    state, consecutive, open_until = BreakerState.CLOSED, 0, 0.0
    for op in ops:
        if op in ("tick", "wait"):
            clock.advance(1.0 if op == "tick" else 5.0)
            continue
        if state is BreakerState.OPEN and clock.now >= open_until:
            state = BreakerState.HALF_OPEN
        allowed = cb.allow()
        assert allowed == (state is not BreakerState.OPEN)
        if not allowed:
            continue
        if op == "ok":
            consecutive, state = 0, BreakerState.CLOSED
            cb.record_success()
        else:
            consecutive += 1
            if state is BreakerState.HALF_OPEN or consecutive >= threshold:
                state, open_until = BreakerState.OPEN, clock.now + 5.0
            cb.record_failure()
        assert state_of(cb) is state
        assert cb.snapshot().consecutive_failures == consecutive


def test_snapshot_and_error_serialise() -> None:
    cb = CircuitBreaker("s")
    snap = cb.snapshot()
    assert msgspec.json.decode(msgspec.json.encode(snap), type=BreakerSnapshot) == snap
    assert msgspec.json.encode(snap).startswith(b'{"name":"s","state":"closed"')
    err = pickle.loads(pickle.dumps(CircuitOpenError("s", 1.5)))
    assert (err.name, err.retry_in_s, err.code) == ("s", 1.5, 503)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"failure_threshold": 0},
        {"recovery_timeout": -1.0},
        {"jitter": 1.0},
        {"half_open_max_calls": 0},
    ],
)
def test_invalid_settings_are_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        CircuitBreaker("x", **kwargs)  # type: ignore[arg-type]
