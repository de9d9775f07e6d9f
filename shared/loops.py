"""Named background loops with jitter, timeouts, backoff and per-loop stats.

Every periodic duty of a service (beacons, reapers, retention, metrics rounds) runs as a
:class:`Loop` inside the service's own task group, never as a bare task, so that stopping
the service cancels it and its health details can show how it is doing.

A loop calls its function every ``interval`` seconds, give or take ``jitter`` (a fraction
of the delay) so that many instances started together do not fire in lock step. A call
that raises or overruns ``timeout`` is a failure: the next wait grows exponentially, up to
``max_backoff``, and the first success brings it back to ``interval``. Errors are counted
and logged once per exception type; they never end the loop. Cancellation always ends it.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable

import anyio
import anyio.abc
import msgspec

__all__ = ["Loop", "LoopStats"]

log = logging.getLogger(__name__)


class LoopStats(msgspec.Struct, frozen=True):
    """A point-in-time view of one loop, ready to encode into health details."""

    name: str
    interval: float
    runs: int
    successes: int
    failures: int
    timeouts: int
    consecutive_failures: int
    last_error: str
    last_run_at: float | None  # wall clock (time.time()), for humans reading health
    last_duration_s: float
    next_delay_s: float
    paused: bool
    running: bool
    #: Seconds spent in runs since the loop was created: what the loop costs.
    total_duration_s: float = 0.0
    #: CPU seconds of this process's thread while runs were in progress (awaits inside
    #: a run let other tasks run, so this bounds the loop's CPU from above).
    cpu_s: float = 0.0


class Loop:
    """A named loop that calls ``func`` periodically until it is cancelled.

    ``run()`` is meant for ``task_group.start(loop.run)``; ``pause()``, ``resume()`` and
    ``trigger()`` may be called from any task of the same event loop.
    """

    def __init__(
        self,
        name: str,
        func: Callable[[], Awaitable[None]],
        *,
        interval: float,
        jitter: float = 0.1,
        timeout: float | None = None,
        max_backoff: float = 60.0,
        backoff_factor: float = 2.0,
        run_at_start: bool = True,
        on_error: Callable[[str, BaseException], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"loop {name!r}: interval must be > 0, got {interval}")
        if not 0 <= jitter < 1:
            raise ValueError(f"loop {name!r}: jitter must be in [0, 1), got {jitter}")
        if timeout is not None and timeout <= 0:
            raise ValueError(f"loop {name!r}: timeout must be > 0 or None, got {timeout}")
        if backoff_factor < 1:
            raise ValueError(f"loop {name!r}: backoff_factor must be >= 1")
        if max_backoff < interval:
            raise ValueError(f"loop {name!r}: max_backoff must be >= interval")
        self.name = name
        self.interval = interval
        self.jitter = jitter
        self.timeout = timeout
        self.max_backoff = max_backoff
        self.backoff_factor = backoff_factor
        self.run_at_start = run_at_start
        self._func = func
        self._on_error = on_error
        self._clock = clock
        self._rng = rng or random.Random()
        # One call at a time: a trigger during a scheduled call must not overlap it.
        self._lock = anyio.Lock()
        self._wake = anyio.Event()
        self._trigger_pending = False
        self._paused = False
        self._running = False
        self._logged_types: set[type[BaseException]] = set()
        self._runs = self._successes = self._failures = self._timeouts = 0
        self._consecutive_failures = 0
        self._last_error = ""
        self._last_run_at: float | None = None
        self._last_duration_s = 0.0
        self._next_delay_s = 0.0
        self._total_duration_s = 0.0
        self._cpu_s = 0.0

    @property
    def paused(self) -> bool:
        """True while scheduled runs are suspended (``trigger()`` still runs once)."""
        return self._paused

    def pause(self) -> None:
        """Stop scheduled runs after the current one; the loop task stays alive."""
        self._paused = True

    def resume(self) -> None:
        """Resume scheduled runs; a run that fell due while paused happens at once."""
        self._paused = False
        self._wake.set()

    def trigger(self) -> None:
        """Ask for one run now, cutting short the current wait, even while paused."""
        self._trigger_pending = True
        self._wake.set()

    def base_delay(self) -> float:
        """The delay before jitter: ``interval``, or the backoff after failures."""
        if self._consecutive_failures == 0:
            return self.interval
        grown = self.interval * self.backoff_factor**self._consecutive_failures
        return min(grown, self.max_backoff)

    def _next_delay(self) -> float:
        base = self.base_delay()
        # Jitter is a fraction of the delay itself, so backed-off retries of many
        # instances stay spread out as much as their regular runs.
        spread = base * self.jitter
        return max(0.0, base + self._rng.uniform(-spread, spread))

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Run until cancelled; signals ``task_status.started()`` once it is running."""
        if self._running:
            raise RuntimeError(f"loop {self.name!r} is already running")
        self._running = True
        try:
            task_status.started()
            if not self.run_at_start:
                await self._sleep(self._set_next_delay())
            while True:
                # A pause holds the loop here; resume() or trigger() sets _wake.
                while self._paused and not self._trigger_pending:
                    await self._wait_wake()
                self._trigger_pending = False
                await self.run_once()
                await self._sleep(self._set_next_delay())
        finally:
            self._running = False

    def _set_next_delay(self) -> float:
        self._next_delay_s = self._next_delay()
        return self._next_delay_s

    async def _wait_wake(self) -> None:
        await self._wake.wait()
        # Events cannot be cleared in anyio; a fresh one arms the next wake-up.
        self._wake = anyio.Event()

    async def _sleep(self, delay: float) -> None:
        """Wait ``delay`` seconds, returning early only for a trigger."""
        deadline = anyio.current_time() + delay
        while not self._trigger_pending:
            remaining = deadline - anyio.current_time()
            if remaining <= 0:
                return
            # resume() also sets _wake; that must not cut the wait short, so loop.
            with anyio.move_on_after(remaining):
                await self._wait_wake()

    async def run_once(self) -> bool:
        """Call ``func`` once, bounded by ``timeout``; True on success.

        Exceptions are recorded, never raised; cancellation from outside propagates.
        """
        async with self._lock:
            self._runs += 1
            self._last_run_at = time.time()
            started = self._clock()
            cpu_started = time.thread_time()
            error: BaseException | None = None
            try:
                with anyio.move_on_after(self.timeout) as scope:
                    await self._func()
            except Exception as exc:  # noqa: BLE001 - any error is counted; the loop lives on
                error = exc
            self._last_duration_s = self._clock() - started
            self._total_duration_s += self._last_duration_s
            self._cpu_s += time.thread_time() - cpu_started
            if error is None and scope.cancelled_caught:
                self._timeouts += 1
                error = TimeoutError(f"loop {self.name!r} timed out after {self.timeout}s")
            if error is None:
                self._successes += 1
                self._consecutive_failures = 0
                return True
            self._record_failure(error)
            return False

    def _record_failure(self, error: BaseException) -> None:
        self._failures += 1
        self._consecutive_failures += 1
        self._last_error = f"{type(error).__name__}: {error}"
        # A loop failing every second would flood the log; the first of each kind is
        # enough, the counts in stats() tell the rest.
        if type(error) not in self._logged_types:
            self._logged_types.add(type(error))
            log.warning("loop %s failed: %s", self.name, self._last_error, exc_info=error)
        else:
            log.debug("loop %s failed again: %s", self.name, self._last_error)
        if self._on_error is not None:
            try:
                self._on_error(self.name, error)
            except Exception:
                # A broken callback must not turn into a dead loop.
                log.exception("loop %s: on_error callback failed", self.name)

    def stats(self) -> LoopStats:
        """Counters and timings of this loop since it was created."""
        return LoopStats(
            name=self.name,
            interval=self.interval,
            runs=self._runs,
            successes=self._successes,
            failures=self._failures,
            timeouts=self._timeouts,
            consecutive_failures=self._consecutive_failures,
            last_error=self._last_error,
            last_run_at=self._last_run_at,
            last_duration_s=self._last_duration_s,
            next_delay_s=self._next_delay_s,
            total_duration_s=round(self._total_duration_s, 6),
            cpu_s=round(self._cpu_s, 6),
            paused=self._paused,
            running=self._running,
        )
