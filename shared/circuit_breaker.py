"""A circuit breaker for calls to things outside the service.

A dependency that keeps failing is not hammered: after ``failure_threshold`` consecutive
failures the breaker OPENs and rejects calls at once with :class:`CircuitOpenError` (a
503 :class:`~shared.errors.Unavailable`). After ``recovery_timeout`` seconds, spread by
``jitter`` so that many instances do not probe in the same instant, it turns HALF_OPEN
and lets up to ``half_open_max_calls`` trial calls through at a time: a success CLOSEs
it, a failure OPENs it again for a freshly drawn timeout.

Only :class:`Exception` counts as a failure. A cancelled call says nothing about the
dependency, so it neither fails nor succeeds; it only frees its trial slot.
"""

from __future__ import annotations

import enum
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

import msgspec

from shared.errors import Unavailable

__all__ = ["BreakerSnapshot", "BreakerState", "CircuitBreaker", "CircuitOpenError"]

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")


class BreakerState(enum.StrEnum):
    """Where the breaker is in its state machine."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitOpenError(Unavailable):
    """The breaker refused the call; ``retry_in_s`` says when it may let one through."""

    def __init__(self, name: str, retry_in_s: float) -> None:
        super().__init__(f"circuit {name!r} is open; retry in {retry_in_s:.1f}s")
        self.name = name
        self.retry_in_s = retry_in_s

    def __reduce__(self) -> tuple[type[CircuitOpenError], tuple[str, float]]:
        # The default pickling passes only the message back to __init__.
        return (type(self), (self.name, self.retry_in_s))


class BreakerSnapshot(msgspec.Struct, frozen=True):
    """A point-in-time view of one breaker, ready to encode into health details."""

    name: str
    state: BreakerState
    failures: int
    consecutive_failures: int
    successes: int
    rejected: int
    opened_at: float | None  # wall clock (time.time()) of the last opening
    retry_in_s: float
    half_open_in_flight: int = 0


class CircuitBreaker:
    """CLOSED → OPEN → HALF_OPEN → CLOSED/OPEN, driven by call outcomes and a clock."""

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = 5,
        recovery_timeout: float = 30.0,
        jitter: float = 0.1,
        half_open_max_calls: int = 1,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError(f"breaker {name!r}: failure_threshold must be >= 1")
        if recovery_timeout < 0:
            raise ValueError(f"breaker {name!r}: recovery_timeout must be >= 0")
        if not 0 <= jitter < 1:
            raise ValueError(f"breaker {name!r}: jitter must be in [0, 1)")
        if half_open_max_calls < 1:
            raise ValueError(f"breaker {name!r}: half_open_max_calls must be >= 1")
        self.name = name
        self.failure_threshold = failure_threshold
        self.recovery_timeout = recovery_timeout
        self.jitter = jitter
        self.half_open_max_calls = half_open_max_calls
        self._clock = clock
        self._rng = rng or random.Random()
        self._state = BreakerState.CLOSED
        self._failures = self._successes = self._rejected = 0
        self._consecutive_failures = 0
        self._opened_mono = 0.0
        self._opened_at: float | None = None
        self._open_for = 0.0
        self._in_flight = 0
        # Bumped on every entry to HALF_OPEN so that a trial from an earlier round cannot
        # free a slot of the current one and let an extra trial through.
        self._round = 0

    @property
    def state(self) -> BreakerState:
        """The current state; OPEN turns HALF_OPEN here once its timeout has passed."""
        if self._state is BreakerState.OPEN and self._retry_in() <= 0:
            self._to(BreakerState.HALF_OPEN)
        return self._state

    def _retry_in(self) -> float:
        return max(0.0, self._opened_mono + self._open_for - self._clock())

    def _to(self, new: BreakerState) -> None:
        old, self._state = self._state, new
        self._in_flight = 0
        if new is BreakerState.OPEN:
            self._opened_mono = self._clock()
            self._opened_at = time.time()
            # Drawn once per opening, so retry_in_s stays stable while it is open.
            spread = self.recovery_timeout * self.jitter
            self._open_for = self.recovery_timeout + self._rng.uniform(-spread, spread)
        elif new is BreakerState.HALF_OPEN:
            self._round += 1
        elif new is BreakerState.CLOSED:
            self._consecutive_failures = 0
        level = logging.WARNING if new is BreakerState.OPEN else logging.INFO
        log.log(level, "breaker %s: %s -> %s", self.name, old, new)

    def _admit(self) -> int | None:
        """Let a call through or not: None if rejected, else the trial round (0 if none)."""
        state = self.state
        if state is BreakerState.CLOSED:
            return 0
        if state is BreakerState.HALF_OPEN and self._in_flight < self.half_open_max_calls:
            self._in_flight += 1
            return self._round
        self._rejected += 1
        return None

    def _release(self, round_: int) -> None:
        if round_ and round_ == self._round and self._state is BreakerState.HALF_OPEN:
            self._in_flight = max(0, self._in_flight - 1)

    def allow(self) -> bool:
        """Ask whether a call may go ahead now (counts a rejection if not).

        Every allowed call must end in ``record_success()``, ``record_failure()`` or,
        if it was cancelled, ``release()``: in HALF_OPEN it holds a trial slot until then.
        These calls carry no ticket, so prefer ``call()``, which frees exactly the slot
        its own call took even when the breaker has moved on in between.
        """
        return self._admit() is not None

    def release(self) -> None:
        """An allowed call ended without a verdict (cancelled): free its trial slot."""
        self._release(self._round)

    def record_success(self) -> None:
        """Count a successful call; in HALF_OPEN this closes the breaker."""
        self._release(self._round)
        self._on_success()

    def record_failure(self) -> None:
        """Count a failed call; it may open (or reopen) the breaker."""
        self._release(self._round)
        self._on_failure()

    def _on_success(self) -> None:
        self._successes += 1
        self._consecutive_failures = 0
        if self.state is BreakerState.HALF_OPEN:
            self._to(BreakerState.CLOSED)

    def _on_failure(self) -> None:
        self._failures += 1
        self._consecutive_failures += 1
        state = self.state
        if state is BreakerState.HALF_OPEN or (
            state is BreakerState.CLOSED and self._consecutive_failures >= self.failure_threshold
        ):
            self._to(BreakerState.OPEN)

    async def call(self, func: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``func(*args, **kwargs)`` through the breaker.

        Raises :class:`CircuitOpenError` without calling ``func`` when the breaker is
        OPEN, or HALF_OPEN with all trial slots taken. ``func``'s own errors propagate.
        """
        round_ = self._admit()
        if round_ is None:
            raise CircuitOpenError(self.name, self._retry_in())
        try:
            result = await func(*args, **kwargs)
        except Exception:
            self._release(round_)
            self._on_failure()
            raise
        except BaseException:
            # Cancellation (or KeyboardInterrupt) is no verdict on the dependency.
            self._release(round_)
            raise
        self._release(round_)
        self._on_success()
        return result

    def snapshot(self) -> BreakerSnapshot:
        """Counters and state of this breaker since it was created."""
        state = self.state
        return BreakerSnapshot(
            name=self.name,
            state=state,
            failures=self._failures,
            consecutive_failures=self._consecutive_failures,
            successes=self._successes,
            rejected=self._rejected,
            opened_at=self._opened_at,
            retry_in_s=self._retry_in() if state is BreakerState.OPEN else 0.0,
            half_open_in_flight=self._in_flight,
        )
