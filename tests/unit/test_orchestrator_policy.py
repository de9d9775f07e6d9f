"""The orchestrator's liveness rules (policy) and the registry driven by a fake clock."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.orchestrator import policy
from services.orchestrator.policy import BeaconHead, Change, State
from services.orchestrator.registry import Registry
from shared.contracts import Beacon, Liveness, ServiceStatus
from shared.events import ServiceLost, ServiceRecovered, ServiceRegistered, ServiceSuspect
from shared.liveness import LOST_AFTER, SUSPECT_AFTER
from shared.subjects import Subjects

A, S, L = Liveness.ALIVE, Liveness.SUSPECT, Liveness.LOST
RUN, DEG, ERR = ServiceStatus.RUNNING, ServiceStatus.DEGRADED, ServiceStatus.ERROR
PAUSED, STOPPED = ServiceStatus.PAUSED, ServiceStatus.STOPPED


@pytest.mark.parametrize(
    ("prev", "status", "state", "changes"),
    [
        (None, RUN, State(A, RUN), (Change.REGISTERED,)),
        (None, DEG, State(A, DEG, "DEGRADED"), (Change.REGISTERED, Change.DEGRADED)),
        (None, ERR, State(A, ERR, "ERROR"), (Change.REGISTERED, Change.DEGRADED)),
        (None, STOPPED, None, (Change.LEFT,)),
        (State(A, RUN), RUN, State(A, RUN), ()),
        (State(A, RUN), PAUSED, State(A, PAUSED), ()),
        (State(A, RUN), DEG, State(A, DEG, "DEGRADED"), (Change.DEGRADED,)),
        (State(A, DEG, "DEGRADED"), DEG, State(A, DEG, "DEGRADED"), ()),
        (State(A, DEG, "DEGRADED"), ERR, State(A, ERR, "ERROR"), (Change.DEGRADED,)),
        (State(A, DEG, "DEGRADED"), RUN, State(A, RUN), (Change.RECOVERED,)),
        (State(A, DEG, "DEGRADED"), PAUSED, State(A, PAUSED, "DEGRADED"), ()),
        (State(A, PAUSED, "DEGRADED"), RUN, State(A, RUN), (Change.RECOVERED,)),
        (State(S, RUN, "SUSPECT"), RUN, State(A, RUN), (Change.RECOVERED,)),
        (State(L, RUN, "LOST"), RUN, State(A, RUN), (Change.RECOVERED,)),
        (State(L, RUN, "LOST"), PAUSED, State(A, PAUSED, "LOST"), ()),
        (State(S, DEG, "SUSPECT"), DEG, State(A, DEG, "SUSPECT"), ()),
        (State(S, RUN, "SUSPECT"), STOPPED, None, (Change.LEFT,)),
        (State(A, RUN), STOPPED, None, (Change.LEFT,)),
    ],
)
def test_on_beacon(
    prev: State | None, status: ServiceStatus, state: State | None, changes: tuple[Change, ...]
) -> None:
    assert policy.on_beacon(prev, status) == (state, changes)


@pytest.mark.parametrize(
    ("prev", "silent", "state", "changes"),
    [
        (State(A, RUN), 1.9, State(A, RUN), ()),
        (State(A, RUN), 2.0, State(A, RUN), ()),  # "more than" two intervals
        (State(A, RUN), 2.01, State(S, RUN, "SUSPECT"), (Change.SUSPECT,)),
        (State(A, RUN), 50.0, State(S, RUN, "SUSPECT"), (Change.SUSPECT,)),  # SUSPECT first
        (State(S, RUN, "SUSPECT"), 3.0, State(S, RUN, "SUSPECT"), ()),
        (State(S, RUN, "SUSPECT"), 3.01, State(L, RUN, "LOST"), (Change.LOST,)),
        (State(L, RUN, "LOST"), 50.0, State(L, RUN, "LOST"), ()),
    ],
)
def test_on_silence(prev: State, silent: float, state: State, changes: tuple[Change, ...]) -> None:
    assert policy.on_silence(prev, silent, 1.0) == (state, changes)


@pytest.mark.parametrize(
    ("state", "silent", "probe"),
    [
        (State(S, RUN, "SUSPECT"), 2.0, False),
        (State(S, RUN, "SUSPECT"), 2.01, True),  # asked as soon as it is SUSPECT
        (State(A, RUN), 10.0, False),  # the sweep makes it SUSPECT first
        (State(L, RUN, "LOST"), 10.0, False),
    ],
)
def test_needs_probe(state: State, silent: float, probe: bool) -> None:
    assert policy.needs_probe(state, silent, 1.0) is probe


@pytest.mark.parametrize(
    ("prev", "answered", "state", "changes"),
    [
        (State(S, RUN, "SUSPECT"), True, State(S, RUN, "SUSPECT"), ()),
        # Unanswered: LOST at once, without waiting for 3 silent intervals.
        (State(S, RUN, "SUSPECT"), False, State(L, RUN, "LOST"), (Change.LOST,)),
        (State(A, RUN), False, State(A, RUN), ()),  # a beacon came meanwhile
        (State(L, RUN, "LOST"), False, State(L, RUN, "LOST"), ()),
    ],
)
def test_on_probe(prev: State, answered: bool, state: State, changes: tuple[Change, ...]) -> None:
    assert policy.on_probe(prev, answered) == (state, changes)


def test_lost_is_the_unanswered_probe_or_three_silent_intervals_whichever_first() -> None:
    suspect = State(S, RUN, "SUSPECT")
    assert policy.on_probe(suspect, False) == (State(L, RUN, "LOST"), (Change.LOST,))
    assert policy.on_silence(suspect, 2.9, 1.0) == (suspect, ())
    assert policy.on_silence(suspect, 3.01, 1.0) == (State(L, RUN, "LOST"), (Change.LOST,))
    # Never straight from ALIVE, however long the silence: SUSPECT (and a probe) first.
    assert policy.on_silence(State(A, RUN), 100.0, 1.0)[0].liveness is S


def test_forget_and_troubled() -> None:
    assert policy.should_forget(State(L, RUN, "LOST"), 301, 300)
    assert not policy.should_forget(State(L, RUN, "LOST"), 299, 300)
    assert not policy.should_forget(State(S, RUN, "SUSPECT"), 1000, 300)
    assert [policy.is_troubled(s) for s in (State(A, RUN), State(A, DEG), State(S, RUN))] == [
        False,
        True,
        True,
    ]


# -- property: any sequence of inputs keeps the rules' promises --------------------

statuses = st.sampled_from([s for s in ServiceStatus if s is not STOPPED])
steps = st.lists(
    st.one_of(
        st.tuples(st.just("beacon"), statuses),
        st.tuples(st.just("silence"), st.floats(0, 10)),
        st.tuples(st.just("probe"), st.booleans()),
    ),
    max_size=40,
)


@given(first=statuses, steps=steps)
def test_any_sequence_keeps_the_promises(
    first: ServiceStatus, steps: list[tuple[str, object]]
) -> None:
    state, changes = policy.on_beacon(None, first)
    assert state is not None and changes[0] is Change.REGISTERED
    for kind, arg in steps:
        prev = state
        if kind == "beacon":
            assert isinstance(arg, ServiceStatus)
            new, changes = policy.on_beacon(prev, arg)
            assert new is not None and new.liveness is A
            assert (Change.DEGRADED in changes) == (
                arg in policy.BAD_STATUSES and arg != prev.status
            )
            recovered = Change.RECOVERED in changes
            assert recovered == (arg is RUN and (prev.trouble != "" or prev.liveness is not A))
            if prev.liveness is A and prev.status is arg:
                assert changes == ()  # the steady state costs nothing
        elif kind == "silence":
            assert isinstance(arg, float)
            new, changes = policy.on_silence(prev, arg, 1.0)
            if Change.LOST in changes:  # SUSPECT first, then 3 silent intervals
                assert prev.liveness is S and arg > LOST_AFTER
        else:
            new, changes = policy.on_probe(prev, bool(arg))
            if changes:
                assert prev.liveness is S and not arg and new.liveness is L
        assert Change.REGISTERED not in changes
        # Trouble is remembered until a RUNNING beacon reports the recovery.
        assert new.trouble or not policy.is_troubled(new)
        assert not (new.liveness is A and new.status is RUN and new.trouble)
        state = new


# -- the registry, with a fake clock ------------------------------------------------


def beacon(status: ServiceStatus = RUN, instance: str = "i1", seq: int = 1) -> BeaconHead:
    return BeaconHead(
        service="demo",
        instance=instance,
        version="1",
        host="h",
        pid=1,
        status=status,
        healthy=True,
        started_at=0.0,
        sent_at=0.0,
        seq=seq,
        interval_s=1.0,
    )


def test_registry_silent_instance_goes_suspect_then_lost_then_recovers() -> None:
    reg = Registry()
    events = reg.observe(beacon(), now=0.0)
    assert [type(e) for e in events] == [ServiceRegistered]
    assert reg.observe(beacon(seq=2), now=1.0) == []
    assert reg.sweep(2.9) == ([], [])
    events, probes = reg.sweep(3.1)
    assert [type(e) for e in events] == [ServiceSuspect] and probes == [("demo", "i1")]
    assert reg.sweep(3.2) == ([], [])  # one probe at a time
    # Unanswered: LOST at once, before 3 silent intervals.
    events = reg.probe_result(("demo", "i1"), False, started=3.1, now=3.6)
    assert [type(e) for e in events] == [ServiceLost]
    assert reg.sweep(4.1) == ([], [])
    assert reg.views(5.0, 1005.0)[0].liveness is L
    events = reg.observe(beacon(seq=3), now=6.0)
    assert events == [ServiceRecovered(service="demo", instance="i1", was="LOST")]
    assert reg.troubled() == []


def test_registry_answered_probe_keeps_suspect_and_restarts_the_count() -> None:
    reg = Registry()
    reg.observe(beacon(), now=0.0)
    _, probes = reg.sweep(2.5)
    assert probes == [("demo", "i1")]
    assert reg.probe_result(probes[0], True, started=2.5, now=2.6) == []
    entry = reg.get("demo", "i1")
    assert entry is not None and entry.state.liveness is S and entry.seen == 2.6
    assert reg.sweep(4.5) == ([], [])  # silent 1.9 intervals since the answer
    assert reg.sweep(4.7)[1] == [("demo", "i1")]
    # Inconclusive (our own connection down): no verdict, the next sweep asks again.
    assert reg.probe_result(("demo", "i1"), None, started=4.7, now=4.8) == []
    assert reg.sweep(4.9)[1] == [("demo", "i1")]


def test_registry_probe_overtaken_by_a_beacon_says_nothing() -> None:
    reg = Registry()
    reg.observe(beacon(), now=0.0)
    _, probes = reg.sweep(2.5)
    reg.observe(beacon(seq=2), now=2.7)
    assert reg.probe_result(probes[0], False, started=2.5, now=3.0) == []
    assert reg.views(4.0, 4.0)[0].liveness is A


def test_registry_orderly_stop_removes_and_lost_is_forgotten() -> None:
    reg = Registry(forget_after_s=10.0)
    reg.observe(beacon(instance="a"), now=0.0)
    reg.observe(beacon(instance="b"), now=0.0)
    assert reg.observe(beacon(STOPPED, instance="a"), now=0.5) == []
    assert [v.instance for v in reg.views(1.0, 1.0)] == ["b"] and reg.left == 1
    _, probes = reg.sweep(2.5)
    assert [type(e) for e in reg.probe_result(probes[0], False, started=2.5, now=2.6)] == [
        ServiceLost
    ]
    reg.sweep(9.0)
    assert len(reg) == 1
    reg.sweep(10.5)
    assert len(reg) == 0 and reg.forgotten == 1


def test_registry_pardon_and_views_sorted() -> None:
    reg = Registry()
    for name in ("c", "a", "b"):
        reg.observe(beacon(instance=name), now=0.0)
    reg.pardon(100.0)
    assert reg.sweep(101.0) == ([], [])
    views = reg.views(101.0, 2000.0)
    assert [v.instance for v in views] == ["a", "b", "c"]
    assert views[0].last_seen == pytest.approx(1999.0)
    assert reg.counts()["liveness"] == {"ALIVE": 3}


def test_beacon_head_is_the_beacon_without_details() -> None:
    head = {f.name: f.type for f in msgspec.structs.fields(BeaconHead)}
    full = {f.name: f.type for f in msgspec.structs.fields(Beacon)}
    assert head == {k: v for k, v in full.items() if k != "details"}
    whole = Beacon(**msgspec.structs.asdict(beacon()), details={"a": [1, {"b": 2}]})
    assert msgspec.json.decode(msgspec.json.encode(whole), type=BeaconHead) == beacon()


@pytest.mark.parametrize(
    ("subject", "data", "kind"),
    [
        ("p.beacon.demo.i1", b"x" * 5000, "oversized"),
        ("p.beacon.demo.i1", b"", "empty"),
        ("p.beacon.demo.i1", b"{not json", "malformed"),
        ("p.beacon.demo.i1", b'{"service": 1}', "wrong_schema"),
        ("p.beacon.demo.other", msgspec.json.encode(beacon()), "subject_mismatch"),
        (
            "p.beacon.demo.i1",
            msgspec.json.encode(msgspec.structs.replace(beacon(), interval_s=0.0)),
            "bad_interval",
        ),
    ],
)
def test_beacon_reader_rejects_with_a_kind(subject: str, data: bytes, kind: str) -> None:
    reader = policy.BeaconReader(Subjects("p"), max_bytes=4096)
    with pytest.raises(policy.InvalidBeacon) as caught:
        reader.read(subject, data)
    assert caught.value.kind == kind
    assert reader.read("p.beacon.demo.i1", msgspec.json.encode(beacon())) == beacon()


def test_an_observer_that_hears_nobody_is_deaf_before_anyone_is_suspect() -> None:
    assert policy.DEAF_AFTER < SUSPECT_AFTER
    assert not policy.deaf(1.0, 1.0) and policy.deaf(1.6, 1.0)
    # A full stall: by the time any instance could be SUSPECT, the observer is deaf.
    assert policy.deaf(SUSPECT_AFTER * 0.25, 0.25)


def test_registry_lists_the_lost_silent_long_enough_to_be_hung() -> None:
    reg = Registry()
    reg.observe(beacon(), now=0.0)
    reg.observe(beacon(instance="i2"), now=0.0)
    reg.sweep(2.1)  # both SUSPECT, probes out
    reg.probe_result(("demo", "i1"), False, started=2.1, now=2.6)
    reg.probe_result(("demo", "i2"), True, started=2.1, now=2.6)  # i2 answered
    assert reg.lost_for(3.1, 5.0) == []  # i1 LOST, but not silent long enough yet
    assert [e.beacon.instance for e in reg.lost_for(5.0, 5.0)] == ["i1"]


def test_registry_silence_alone_makes_lost_at_three_intervals() -> None:
    """A probe still out (or inconclusive) does not hold LOST back past 3 intervals."""
    reg = Registry()
    reg.observe(beacon(), now=0.0)
    _, probes = reg.sweep(2.1)
    assert probes == [("demo", "i1")]
    assert reg.sweep(2.9) == ([], [])
    events, _ = reg.sweep(3.1)
    assert [type(e) for e in events] == [ServiceLost]
    assert reg.probe_result(probes[0], False, started=2.1, now=3.2) == []
