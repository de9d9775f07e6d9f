"""The faults a chaos run injects: kill -9 of supervised processes, nats-server restarts.

Targets are drawn from a seeded ``random.Random``: a run with the same seed makes the
same draws, so it picks the same victims as long as the same instances are ready at each
draw (a slower restart can change the candidates, and the choices diverge from there).
A target is
only drawn among instances that run and are RUNNING, and an instance is spared while
it is near the supervisor's restart intensity: the run tests recovery, not the
supervisor giving up (which it does, by design, past the limit).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
from collections import deque
from dataclasses import dataclass, field

from shared.contracts import ChildView, ClusterStatus, Liveness, ServiceStatus


@dataclass(frozen=True)
class Kill:
    """One kill -9 that happened."""

    number: int
    at_s: float
    service: str
    instance: str
    pid: int


@dataclass
class KillPlan:
    """Seeded choice of the next victim, within the restart intensity."""

    seed: int
    #: At most this many kills of one instance within ``period_s``.
    per_instance: int = 3
    period_s: float = 60.0
    rng: random.Random = field(init=False)
    history: dict[str, deque[float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def candidates(self, status: ClusterStatus, now: float) -> list[ChildView]:
        """Instances that may be killed now: running, RUNNING and ALIVE, not over budget."""
        ready = ready_instances(status)
        out = []
        for child in status.children:
            if not child.running or child.pid is None or child.gave_up:
                continue
            if (child.service, child.instance, child.pid) not in ready:
                continue
            recent = self.history.get(child.instance, deque())
            if sum(1 for t in recent if now - t < self.period_s) >= self.per_instance:
                continue
            out.append(child)
        return sorted(out, key=lambda c: c.instance)

    def choose(self, status: ClusterStatus, now: float) -> ChildView | None:
        """The next victim, or None when nobody may be killed right now."""
        found = self.candidates(status, now)
        if not found:
            return None
        # Draw over the sorted instance names so a seed replays the same choices.
        victim = found[self.rng.randrange(len(found))]
        self.history.setdefault(victim.instance, deque()).append(now)
        return victim

    def jitter(self, interval: float) -> float:
        """The pause before the next kill: ``interval`` +/- 50 %, from the seed."""
        return interval * (0.5 + self.rng.random())


def ready_instances(status: ClusterStatus) -> set[tuple[str, str, int]]:
    """(service, instance, pid) of every instance RUNNING and ALIVE.

    The pid is the beacon's: matched against the supervisor's pid of a child, it says
    the process that runs now (not the one killed before it) is the one that is ready.
    """
    return {
        (v.service, v.instance, v.pid)
        for v in status.services
        if v.status is ServiceStatus.RUNNING and v.liveness is Liveness.ALIVE
    }


def kill9(pid: int) -> bool:
    """SIGKILL ``pid``; False when it was already gone."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
        return True
    return False
