"""Restart policy of the supervisor: pure functions over a small frozen state, no I/O.

What happens when a child exits, Erlang/OTP style:

- the policy says whether it should come back at all: ``permanent`` always,
  ``transient`` only after an abnormal exit (non-zero code, killed by a signal, or
  never started), ``temporary`` never;
- the first restart is immediate, later ones back off exponentially with jitter, so
  a crash loop does not hammer the machine (or the bus) and several crashing
  children do not restart in lock step;
- more than ``intensity`` restarts within ``period_s`` means the fault is not
  transient: give up (announced once) and from then on retry only at the backoff
  cap, never stop for good, since the cause (a long NATS outage) may still pass;
- a child that stayed up longer than ``period_s`` starts afresh (its earlier
  crashes say nothing about the new run).

The caller supplies the clock (``now``) and the random source, so every decision is
reproducible in tests.
"""

from __future__ import annotations

import random
import signal
from dataclasses import dataclass
from typing import Literal

from shared.cluster import ClusterSettings, RestartPolicy

__all__ = [
    "Decision",
    "RestartLimits",
    "RestartState",
    "backoff_delay",
    "decide",
    "describe_exit",
    "is_abnormal",
    "should_restart",
]

Action = Literal["restart", "give_up", "stop"]

# 2**60 half-seconds is far beyond any sane cap; clamping the exponent keeps the
# float arithmetic finite for an absurd restart count.
_MAX_EXPONENT = 60


@dataclass(frozen=True, kw_only=True)
class RestartLimits:
    """The knobs of the policy (defaults match ``ClusterSettings``)."""

    intensity: int = 5
    period_s: float = 60.0
    max_delay_s: float = 30.0
    base_delay_s: float = 0.5
    jitter: float = 0.2

    @classmethod
    def from_settings(cls, settings: ClusterSettings) -> RestartLimits:
        """The limits a cluster file configures."""
        return cls(
            intensity=settings.restart_intensity,
            period_s=settings.restart_period_s,
            max_delay_s=settings.max_restart_delay_s,
        )


@dataclass(frozen=True)
class RestartState:
    """Monotonic times of the restarts still inside the intensity window, oldest first."""

    times: tuple[float, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Decision:
    """What to do about one exit, and the state to keep for the next one."""

    action: Action
    delay_s: float
    state: RestartState
    # Restarts inside the window, this one included when action == "restart".
    in_window: int


def is_abnormal(returncode: int | None) -> bool:
    """True for a non-zero exit, a signal (negative code) or a child that never ran (None)."""
    return returncode != 0


def should_restart(policy: RestartPolicy, returncode: int | None) -> bool:
    """Whether ``policy`` wants a child that exited with ``returncode`` back."""
    if policy == "permanent":
        return True
    if policy == "transient":
        return is_abnormal(returncode)
    return False


def backoff_delay(attempt: int, limits: RestartLimits, rng: random.Random) -> float:
    """Delay before restart number ``attempt`` (1-based) within the current window.

    The first is immediate; then ``base * 2**(attempt-2)`` with ``±jitter``, never
    above ``max_delay_s`` (the cap applies after the jitter).
    """
    if attempt <= 1:
        return 0.0
    raw = limits.base_delay_s * 2.0 ** min(attempt - 2, _MAX_EXPONENT)
    factor = 1.0 + rng.uniform(-limits.jitter, limits.jitter)
    return max(0.0, min(limits.max_delay_s, raw * factor))


def decide(
    policy: RestartPolicy,
    returncode: int | None,
    state: RestartState,
    *,
    now: float,
    started_at: float | None,
    limits: RestartLimits,
    rng: random.Random,
) -> Decision:
    """Apply the policy to one exit at monotonic time ``now``.

    ``started_at`` is when the exited run began (None if it never started); a run
    longer than ``period_s`` clears the history first.
    """
    if started_at is not None and now - started_at > limits.period_s:
        state = RestartState()
    # Restarts older than the window no longer count against the intensity.
    times = tuple(t for t in state.times if now - t <= limits.period_s)
    state = RestartState(times)
    if not should_restart(policy, returncode):
        return Decision(action="stop", delay_s=0.0, state=state, in_window=len(times))
    if len(times) >= limits.intensity:
        # Not final: the caller announces it once and retries at the cap from then on.
        return Decision(
            action="give_up", delay_s=limits.max_delay_s, state=state, in_window=len(times)
        )
    attempt = len(times) + 1
    return Decision(
        action="restart",
        delay_s=backoff_delay(attempt, limits, rng),
        state=RestartState((*times, now)),
        in_window=attempt,
    )


def describe_exit(returncode: int | None) -> str:
    """A returncode in words: ``exit code 3``, ``killed by SIGKILL``, ``did not start``."""
    if returncode is None:
        return "did not start"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"
