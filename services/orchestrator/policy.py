"""Liveness and event rules of the registry, as pure functions (no I/O, no clock).

An instance's state is three values: its liveness, the status its last beacon
reported, and ``trouble`` (what was last wrong with it, so that a recovery can say
what it recovered from). The registry feeds three kinds of input through here:

- a beacon arrived (``on_beacon``): the instance is ALIVE again;
- time passed without one (``on_silence``): ALIVE -> SUSPECT past 2 intervals, and
  SUSPECT -> LOST past 3 intervals of silence (the shared rule, ``shared.liveness``);
- a direct probe finished (``on_probe``). The probe is sent at the SUSPECT mark; an
  unanswered one makes the instance LOST at once, so a dead instance (no responder)
  is LOST a moment after 2 intervals and a hung one a probe timeout later. A probe
  that answers keeps it SUSPECT (and restarts its silence).

LOST is whichever comes first: the unanswered probe or 3 intervals of silence. Each
function returns the new state and the changes to announce. LOST is always the second
step (an instance is SUSPECT first, on an earlier sweep), which keeps one slow beacon
from becoming a false death. What counts as a valid beacon in the first place is here too
(``BeaconReader``): decoding bytes is as pure as the rest.
"""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple

import msgspec

from shared.contracts import Liveness, ServiceStatus
from shared.liveness import DESIGN_RULE
from shared.subjects import Subjects

#: Intervals without a beacon from anyone (the observer's own included) after which
#: the observer is deaf: the silence is the bus's, not the instances'. Below
#: ``shared.liveness.SUSPECT_AFTER``, so a stalled server makes the observer deaf before
#: anyone is SUSPECT.
DEAF_AFTER = 1.5

#: Statuses that announce SERVICE_DEGRADED when an instance moves into them.
BAD_STATUSES = frozenset({ServiceStatus.DEGRADED, ServiceStatus.ERROR})


class Change(StrEnum):
    """What a transition announces; the registry turns each into an event."""

    REGISTERED = "REGISTERED"
    SUSPECT = "SUSPECT"
    LOST = "LOST"
    DEGRADED = "DEGRADED"
    RECOVERED = "RECOVERED"
    #: Left in order (a STOPPED beacon): removed from the registry, no event.
    LEFT = "LEFT"


class State(NamedTuple):
    """What the registry knows of one instance, for the rules here."""

    liveness: Liveness
    status: ServiceStatus
    #: What was last wrong ("SUSPECT", "LOST", "DEGRADED", "ERROR"), "" when nothing.
    trouble: str = ""


NO_CHANGES: tuple[Change, ...] = ()


def on_beacon(prev: State | None, status: ServiceStatus) -> tuple[State | None, tuple[Change, ...]]:
    """A beacon with ``status`` arrived; ``prev`` is None for an instance not seen yet.

    Returns None as the state when the instance left in order (STOPPED).
    """
    if status is ServiceStatus.STOPPED:
        return None, (Change.LEFT,)
    if prev is None:
        if status in BAD_STATUSES:
            return State(Liveness.ALIVE, status, status.value), (
                Change.REGISTERED,
                Change.DEGRADED,
            )
        return State(Liveness.ALIVE, status), (Change.REGISTERED,)
    if prev.liveness is Liveness.ALIVE and prev.status is status:
        # The common case, every beacon of a steady instance: nothing to announce.
        return prev, NO_CHANGES
    changes: list[Change] = []
    trouble = prev.trouble
    if status in BAD_STATUSES and status is not prev.status:
        changes.append(Change.DEGRADED)
        trouble = status.value
    if status is ServiceStatus.RUNNING and trouble:
        changes.append(Change.RECOVERED)
        trouble = ""
    return State(Liveness.ALIVE, status, trouble), tuple(changes)


def on_silence(prev: State, silent_s: float, interval_s: float) -> tuple[State, tuple[Change, ...]]:
    """No beacon for ``silent_s`` seconds: SUSPECT past 2 intervals, LOST past 3.

    One step per call: an ALIVE instance becomes SUSPECT first, however long the
    silence, so LOST always follows an earlier SUSPECT (and its probe).
    """
    judged = DESIGN_RULE.state(0.0, silent_s, interval_s)
    if prev.liveness is Liveness.ALIVE and judged is not Liveness.ALIVE:
        return State(Liveness.SUSPECT, prev.status, Liveness.SUSPECT.value), (Change.SUSPECT,)
    if prev.liveness is Liveness.SUSPECT and judged is Liveness.LOST:
        return _lost(prev)
    return prev, NO_CHANGES


def _lost(prev: State) -> tuple[State, tuple[Change, ...]]:
    return State(Liveness.LOST, prev.status, Liveness.LOST.value), (Change.LOST,)


def needs_probe(state: State, silent_s: float, interval_s: float) -> bool:
    """Whether to ask an instance directly: at the SUSPECT mark (2 silent intervals)."""
    return (
        state.liveness is Liveness.SUSPECT
        and DESIGN_RULE.state(0.0, silent_s, interval_s) is not Liveness.ALIVE
    )


def on_probe(prev: State, answered: bool) -> tuple[State, tuple[Change, ...]]:
    """A direct probe of a SUSPECT instance finished.

    Answered: it stays SUSPECT (the caller refreshes its last-seen time, so the next
    probe waits for another 2 silent intervals). Unanswered: LOST at once, since the
    silence already made it SUSPECT and the instance itself did not answer. For an
    instance that is not SUSPECT any more the probe says nothing.
    """
    if prev.liveness is not Liveness.SUSPECT or answered:
        return prev, NO_CHANGES
    return _lost(prev)


def deaf(heard_nothing_s: float, interval_s: float) -> bool:
    """Whether an observer that heard no beacon at all for ``heard_nothing_s`` is deaf.

    Its own beacon comes back through the server every interval, so hearing nothing
    means the bus delivers nothing (a stalled server, a half-open connection): the
    silence says nothing about the instances, and no one may be judged by it.
    """
    return heard_nothing_s > DEAF_AFTER * interval_s


def should_forget(state: State, silent_s: float, forget_after_s: float) -> bool:
    """Whether a LOST instance has been gone long enough to drop from the registry."""
    return state.liveness is Liveness.LOST and silent_s > forget_after_s


def is_troubled(state: State) -> bool:
    """Whether the instance needs attention: not ALIVE, or reporting DEGRADED/ERROR."""
    return state.liveness is not Liveness.ALIVE or state.status in BAD_STATUSES


# -- what a valid beacon is -----------------------------------------------------------


class BeaconHead(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A Beacon without its ``details``: what the registry keeps of each beacon.

    Decoding into it skips ``details`` without building it, several times cheaper
    than the whole Beacon, and its instances are invisible to the garbage collector
    (no containers inside), so thousands of entries cost the collector nothing. The
    fields are the Beacon's own, names and types (a unit test holds them to it).
    """

    service: str
    instance: str
    version: str
    host: str
    pid: int
    status: ServiceStatus
    healthy: bool
    message: str = ""
    started_at: float
    sent_at: float
    seq: int
    interval_s: float


class InvalidBeacon(Exception):
    """A beacon message that cannot be taken in; ``kind`` labels its counter."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


class BeaconReader:
    """Decodes and checks beacon messages with one decoder made up front."""

    def __init__(self, subjects: Subjects, max_bytes: int) -> None:
        self._subjects = subjects
        self._max_bytes = max_bytes
        self._decoder = msgspec.json.Decoder(BeaconHead)

    def read(self, subject: str, data: bytes) -> BeaconHead:
        """The beacon in ``data`` received on ``subject``; InvalidBeacon if it is not one."""
        if len(data) > self._max_bytes:
            raise InvalidBeacon("oversized", f"{len(data)} bytes")
        try:
            beacon = self._decoder.decode(data)
        except msgspec.ValidationError as exc:
            raise InvalidBeacon("wrong_schema", str(exc)) from None
        except msgspec.DecodeError as exc:
            raise InvalidBeacon("malformed" if data else "empty", str(exc)) from None
        # A beacon must come from where it says it does, or it could shadow another.
        if subject != self._subjects.beacon(beacon.service, beacon.instance):
            raise InvalidBeacon("subject_mismatch", subject)
        if not beacon.interval_s > 0:
            raise InvalidBeacon("bad_interval", str(beacon.interval_s))
        return beacon
