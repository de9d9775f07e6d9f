"""Gather results from many calls at once, each bounded by its own timeout.

The status metrics collector asks every instance for its stats in one round; one slow or
broken instance must not hold up the round or break it. :func:`collect` runs the calls in
parallel (at most ``limit`` at a time), gives each ``timeout`` seconds, and reports what
came back, what timed out and what failed. It never raises for a call's sake; only
cancellation of the caller propagates. :class:`Collector` adds lifetime totals and the
last round's counts for health details.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Generic, TypeVar

import anyio
import msgspec

__all__ = ["CollectResult", "Collector", "CollectorStats", "collect"]

T = TypeVar("T")


class CollectResult(msgspec.Struct, Generic[T], frozen=True):
    """The outcome of one round; names keep the order of the ``calls`` mapping."""

    values: dict[str, T]
    timeouts: list[str]
    failures: dict[str, str]  # name -> "ErrorType: message"
    succeeded: int
    timed_out: int
    failed: int
    elapsed_s: float


class CollectorStats(msgspec.Struct, frozen=True):
    """Lifetime totals of a :class:`Collector`, plus its most recent round."""

    name: str
    rounds: int
    calls: int
    successes: int
    timeouts: int
    failures: int
    last_succeeded: int
    last_timed_out: int
    last_failed: int
    last_elapsed_s: float
    last_round_at: float | None  # wall clock (time.time())


async def collect(
    calls: Mapping[str, Callable[[], Awaitable[T]]],
    *,
    # Per call, not for the whole round, so the linter's fail_after advice does not fit.
    timeout: float,
    limit: int = 64,
    clock: Callable[[], float] = time.monotonic,
) -> CollectResult[T]:
    """Run every call in parallel and gather the results by name.

    Each call gets ``timeout`` seconds from the moment it takes one of the ``limit``
    slots, so the limiter bounds the load on the callees and the timeout bounds each one.
    A call that raises :class:`Exception` is listed in ``failures``; one that overruns is
    cancelled and listed in ``timeouts``.
    """
    if timeout <= 0:
        raise ValueError(f"collect: timeout must be > 0, got {timeout}")
    if limit < 1:
        raise ValueError(f"collect: limit must be >= 1, got {limit}")
    started = clock()
    limiter = anyio.CapacityLimiter(limit)
    values: dict[str, T] = {}
    timed_out: set[str] = set()
    failures: dict[str, str] = {}

    async def one(name: str, call: Callable[[], Awaitable[T]]) -> None:
        async with limiter:
            with anyio.move_on_after(timeout) as scope:
                try:
                    values[name] = await call()
                except Exception as exc:  # noqa: BLE001 - reported in the result, by design
                    failures[name] = f"{type(exc).__name__}: {exc}"
            # Only our own deadline counts as a timeout; a TimeoutError raised by the
            # call itself is that call's failure.
            if scope.cancelled_caught and name not in failures and name not in values:
                timed_out.add(name)

    async with anyio.create_task_group() as tg:
        for name, call in calls.items():
            tg.start_soon(one, name, call, name=f"collect:{name}")

    # Completion order is noise; the caller's order makes results comparable round to round.
    return CollectResult(
        values={n: values[n] for n in calls if n in values},
        timeouts=[n for n in calls if n in timed_out],
        failures={n: failures[n] for n in calls if n in failures},
        succeeded=len(values),
        timed_out=len(timed_out),
        failed=len(failures),
        elapsed_s=clock() - started,
    )


class Collector(Generic[T]):
    """Runs :func:`collect` rounds with fixed settings and keeps totals across rounds.

    Lifetime totals show the collector's history; the ``last_*`` counts show how the
    latest round went, which is what health should judge (one bad hour must not stay
    visible for days).
    """

    def __init__(
        self,
        name: str = "collector",
        *,
        timeout: float,
        limit: int = 64,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"collector {name!r}: timeout must be > 0, got {timeout}")
        if limit < 1:
            raise ValueError(f"collector {name!r}: limit must be >= 1, got {limit}")
        self.name = name
        self.timeout = timeout
        self.limit = limit
        self._clock = clock
        self._rounds = self._calls = self._successes = self._timeouts = self._failures = 0
        self._last: CollectResult[T] | None = None
        self._last_round_at: float | None = None

    async def run(self, calls: Mapping[str, Callable[[], Awaitable[T]]]) -> CollectResult[T]:
        """Collect one round and add its counts to the totals."""
        self._last_round_at = time.time()
        result = await collect(calls, timeout=self.timeout, limit=self.limit, clock=self._clock)
        self._rounds += 1
        self._calls += len(calls)
        self._successes += result.succeeded
        self._timeouts += result.timed_out
        self._failures += result.failed
        self._last = result
        return result

    def stats(self) -> CollectorStats:
        """Lifetime totals and the latest round's counts."""
        last = self._last
        return CollectorStats(
            name=self.name,
            rounds=self._rounds,
            calls=self._calls,
            successes=self._successes,
            timeouts=self._timeouts,
            failures=self._failures,
            last_succeeded=last.succeeded if last else 0,
            last_timed_out=last.timed_out if last else 0,
            last_failed=last.failed if last else 0,
            last_elapsed_s=last.elapsed_s if last else 0.0,
            last_round_at=self._last_round_at,
        )
