"""The registry of instances, built from beacons and nothing else.

Everything here can be rebuilt from the beacons of the next two intervals, which is
what lets a restarted orchestrator have the whole picture again without any store.
The rules (liveness, which events a change announces) are in ``policy``; this module
keeps one entry per instance and turns the rules' changes into event payloads.
Times are monotonic seconds passed in by the caller, so tests drive the clock.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import msgspec

from services.orchestrator import policy
from services.orchestrator.policy import BeaconHead, Change, State
from shared.contracts import InstanceView, Liveness
from shared.events import (
    EventData,
    ServiceDegraded,
    ServiceLost,
    ServiceRecovered,
    ServiceRegistered,
    ServiceSuspect,
)

Key = tuple[str, str]

_NO_EVENTS: list[EventData] = []


class Entry(msgspec.Struct, kw_only=True, gc=False):
    """One instance: its last beacon, its state and when it was last heard from."""

    beacon: BeaconHead
    state: State
    #: Monotonic time of the last beacon, or of the last answered probe.
    seen: float
    probing: bool = False


class Registry:
    """Instances by (service, instance); fed by beacons, sweeps and probe results."""

    def __init__(self, *, forget_after_s: float = 300.0) -> None:
        self.forget_after_s = forget_after_s
        self.left = 0
        self.forgotten = 0
        self._entries: dict[Key, Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, service: str, instance: str) -> Entry | None:
        """The entry of one instance, if registered."""
        return self._entries.get((service, instance))

    def observe(self, beacon: BeaconHead, now: float) -> list[EventData]:
        """Take in one beacon (the hot path: O(1), allocation only on a change)."""
        key = (beacon.service, beacon.instance)
        entry = self._entries.get(key)
        prev = entry.state if entry is not None else None
        state, changes = policy.on_beacon(prev, beacon.status)
        if state is None:
            if entry is not None:
                del self._entries[key]
                self.left += 1
            return _NO_EVENTS
        if entry is None:
            self._entries[key] = Entry(beacon=beacon, state=state, seen=now)
        else:
            entry.beacon, entry.state, entry.seen = beacon, state, now
        if not changes:
            return _NO_EVENTS
        return [_event(c, beacon, prev, 0.0) for c in changes]

    def sweep(self, now: float) -> tuple[list[EventData], list[Key]]:
        """Apply silence to every entry: events to emit, and instances to probe now."""
        events: list[EventData] = []
        probes: list[Key] = []
        forget: list[Key] = []
        for key, entry in self._entries.items():
            silent = now - entry.seen
            interval = entry.beacon.interval_s
            state, changes = policy.on_silence(entry.state, silent, interval)
            if changes:
                events.extend(_event(c, entry.beacon, entry.state, silent) for c in changes)
                entry.state = state
            if not entry.probing and policy.needs_probe(state, silent, interval):
                entry.probing = True
                probes.append(key)
            elif policy.should_forget(state, silent, self.forget_after_s):
                forget.append(key)
        for key in forget:
            del self._entries[key]
        self.forgotten += len(forget)
        return events, probes

    def probe_result(
        self, key: Key, answered: bool | None, started: float, now: float
    ) -> list[EventData]:
        """A probe sent at ``started`` finished (None: inconclusive, try again later).

        A beacon since ``started`` makes the probe moot.
        """
        entry = self._entries.get(key)
        if entry is None:
            return _NO_EVENTS
        entry.probing = False
        if answered is None or entry.seen > started:
            return _NO_EVENTS
        state, changes = policy.on_probe(entry.state, answered)
        if answered and state.liveness is Liveness.SUSPECT:
            entry.seen = now
        events = [_event(c, entry.beacon, entry.state, now - entry.seen) for c in changes]
        entry.state = state
        return events

    def lost_for(self, now: float, at_least_s: float) -> list[Entry]:
        """The LOST entries silent for at least ``at_least_s`` seconds."""
        return [
            entry
            for entry in self._entries.values()
            if entry.state.liveness is Liveness.LOST and now - entry.seen >= at_least_s
        ]

    def pardon(self, now: float) -> None:
        """Count every silence from ``now``: the observer itself could not hear anyone."""
        for entry in self._entries.values():
            entry.seen = max(entry.seen, now)

    def views(self, now: float, wall_now: float) -> list[InstanceView]:
        """Every instance, sorted by service and instance; ``last_seen`` in wall time."""
        return [_view(self._entries[key], now, wall_now) for key in sorted(self._entries)]

    def counts(self) -> dict[str, Any]:
        """How many instances per liveness and per reported status."""
        liveness: Counter[str] = Counter()
        status: Counter[str] = Counter()
        for entry in self._entries.values():
            liveness[entry.state.liveness.value] += 1
            status[entry.state.status.value] += 1
        return {
            "instances": len(self._entries),
            "liveness": dict(liveness),
            "status": dict(status),
            "left": self.left,
            "forgotten": self.forgotten,
        }

    def troubled(self, *, status_ignored_for: str = "") -> list[str]:
        """``service/instance: reason`` for every instance needing attention.

        ``status_ignored_for`` names a service whose reported status does not count
        (only its liveness): orchestrators derive their status from the registry, so
        counting each other's would keep two of them DEGRADED because of each other.
        """
        found: list[str] = []
        for (service, instance), entry in self._entries.items():
            state = entry.state
            if state.liveness is not Liveness.ALIVE:
                found.append(f"{service}/{instance}: {state.liveness.value}")
            elif service != status_ignored_for and state.status in policy.BAD_STATUSES:
                found.append(f"{service}/{instance}: {state.status.value}")
        return found


def _event(change: Change, beacon: BeaconHead, prev: State | None, silent_s: float) -> EventData:
    service, instance = beacon.service, beacon.instance
    if change is Change.REGISTERED:
        return ServiceRegistered(
            service=service, instance=instance, host=beacon.host, version=beacon.version
        )
    if change is Change.DEGRADED:
        return ServiceDegraded(
            service=service, instance=instance, status=beacon.status, message=beacon.message
        )
    if change is Change.SUSPECT:
        return ServiceSuspect(service=service, instance=instance, silent_s=round(silent_s, 3))
    if change is Change.LOST:
        return ServiceLost(service=service, instance=instance, silent_s=round(silent_s, 3))
    if change is Change.RECOVERED:
        was = prev.trouble if prev is not None else ""
        return ServiceRecovered(service=service, instance=instance, was=was)
    raise ValueError(f"no event for change {change}")


def _view(entry: Entry, now: float, wall_now: float) -> InstanceView:
    b = entry.beacon
    return InstanceView(
        service=b.service,
        instance=b.instance,
        host=b.host,
        pid=b.pid,
        version=b.version,
        status=b.status,
        liveness=entry.state.liveness,
        healthy=b.healthy,
        message=b.message,
        started_at=b.started_at,
        last_seen=wall_now - (now - entry.seen),
        beacon_seq=b.seq,
        interval_s=b.interval_s,
    )
