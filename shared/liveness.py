"""Whether a node or an instance is alive, from when it was last heard: the one rule.

Every announcer says how often it speaks (a beacon's or a NodeInfo's ``interval_s``).
Silence is counted in those intervals, on one monotonic clock that the caller passes
in (``now`` and the time it was last heard, both ``time.monotonic()`` seconds; an age
measured on the wall clock, such as ``time.time() - sent_at``, is converted once, at
the edge, with :func:`heard_at`):

- ALIVE while silent for at most ``SUSPECT_AFTER`` (2) intervals;
- SUSPECT past 2 intervals (the orchestrator probes an instance directly there);
- LOST past ``LOST_AFTER`` (3) intervals, or sooner when a probe went unanswered
  (that part is the orchestrator's registry, the one place that probes).

A service may set the LOST mark itself, as a number of intervals or in seconds
(operators tune how fast a node's jobs are failed); SUSPECT then stays at the same
share of it. A node that is SUSPECT still counts as alive: only LOST removes it.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.contracts import Liveness

#: Silent intervals after which an announcer is SUSPECT.
SUSPECT_AFTER = 2.0
#: Silent intervals after which an announcer is LOST.
LOST_AFTER = 3.0

__all__ = ["DESIGN_RULE", "LOST_AFTER", "SUSPECT_AFTER", "Liveness", "LivenessRule", "heard_at"]


@dataclass(frozen=True)
class LivenessRule:
    """Where the LOST mark is: ``lost_after_s`` seconds when set, else ``lost_after``
    intervals of the announcer's own interval."""

    lost_after: float = LOST_AFTER
    lost_after_s: float | None = None

    def __post_init__(self) -> None:
        if self.lost_after <= 0 or (self.lost_after_s is not None and self.lost_after_s <= 0):
            raise ValueError("the LOST mark must be after some silence")

    def lost_mark(self, interval_s: float) -> float:
        """Seconds of silence after which an announcer of ``interval_s`` is LOST."""
        return self.lost_after_s if self.lost_after_s is not None else self.lost_after * interval_s

    def state(self, last_heard: float, now: float, interval_s: float) -> Liveness:
        """ALIVE, SUSPECT or LOST for an announcer last heard at ``last_heard``."""
        silent = now - last_heard
        lost = self.lost_mark(interval_s)
        if silent > lost:
            return Liveness.LOST
        if silent > lost * (SUSPECT_AFTER / LOST_AFTER):
            return Liveness.SUSPECT
        return Liveness.ALIVE

    def alive(self, last_heard: float, now: float, interval_s: float) -> bool:
        """Whether it still counts (ALIVE or SUSPECT; only LOST does not)."""
        return self.state(last_heard, now, interval_s) is not Liveness.LOST


#: The design's rule: SUSPECT past 2 intervals, LOST past 3.
DESIGN_RULE = LivenessRule()


def heard_at(now: float, age_s: float) -> float:
    """The monotonic time an announcement ``age_s`` old was heard (a negative age,
    from clock skew between hosts, counts as just now)."""
    return now - max(age_s, 0.0)
