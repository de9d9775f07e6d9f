"""The independent chaos checks against hand-built records: each holds on a good one."""

from __future__ import annotations

import dataclasses
from typing import Any

from chaos import checks
from shared.contracts import Event, ServiceMetrics, ServiceStatus
from shared.jobs import JobRecord, JobSpec, JobState


def ev(type_: str, **data: Any) -> Event:
    return Event(id=type_, source="/p/s/i", type=type_, time="t", sequence=0, data=data)


def job(job_id: str, state: JobState) -> JobRecord:
    return JobRecord(
        job_id=job_id, spec=JobSpec(type="t"), state=state, submitted_at=0.0, updated_at=0.0
    )


def metrics(instance: str, dropped: int = 0, pending: int = 0) -> ServiceMetrics:
    return ServiceMetrics(
        service="s",
        instance=instance,
        status=ServiceStatus.RUNNING,
        uptime_s=1.0,
        rss_bytes=1,
        cpu_seconds=0.0,
        handled=0,
        invalid=0,
        handler_errors=0,
        events_emitted=3,
        events_acked=3 - pending,
        events_dropped=dropped,
        events_pending=pending,
    )


def test_the_ledger_holds_when_each_job_ended_once_and_fails_on_a_lost_end() -> None:
    jobs = {"a": job("a", JobState.COMPLETED), "b": job("b", JobState.CANCELLED)}
    ends = [ev("JOB_COMPLETED", job_id="a"), ev("JOB_CANCELLED", job_id="b")]
    assert checks.ledger_kept({"a", "b"}, ends, jobs).held
    # The stream never heard of "c" (its JOB_SUBMITTED lost too): only the ledger knows.
    lost = checks.ledger_kept({"a", "b", "c"}, ends[:1], jobs)
    assert not lost.held
    assert lost.violations == [
        "b: CANCELLED with 0 terminal events",
        "c: the harness submitted it, no record",
    ]


def test_a_short_read_of_the_stream_fails() -> None:
    assert checks.stream_read_whole(10, 10).held
    assert not checks.stream_read_whole(10, 7).held


def test_a_dropped_or_pending_event_in_any_outbox_fails() -> None:
    assert checks.outboxes_clean([metrics("a"), metrics("b")]).held
    assert not checks.outboxes_clean([metrics("a"), metrics("b", dropped=1)]).held
    assert not checks.outboxes_clean([metrics("a", pending=2)]).held
    assert not checks.outboxes_clean([]).held


def promoted(model: str, previous: str = "") -> Event:
    return ev("MODEL_PROMOTED", game="c", model_id=model, previous=previous)


def test_champion_switches_against_their_announcements() -> None:
    history = {"c": [("m1", ""), ("m2", "m1")]}
    assert checks.champions_announced(history, [promoted("m1"), promoted("m2", "m1")]).held
    unannounced = checks.champions_announced(history, [promoted("m1")])
    assert not unannounced.held and "m2 over m1 never announced" in unannounced.violations[0]
    extra = checks.champions_announced({"c": [("m1", "")]}, [promoted("m1"), promoted("m3", "m1")])
    assert not extra.held and "key never moved" in extra.violations[0]


def test_failpoints_fired_notes_the_points_not_reached() -> None:
    verdict = checks.failpoints_fired(["a", "b"], {"a": 1})
    assert verdict.held and "not reached: b" in verdict.note
    assert not checks.failpoints_fired(["a"], {}).held
    assert checks.failpoints_fired([], {}).held


def accept(game: str, candidate: str, champion: str = "") -> Event:
    return ev(
        "EVALUATION_COMPLETED",
        game=game,
        candidate=candidate,
        champion=champion,
        decision="accept",
    )


def promoted_in(game: str, model: str, previous: str = "") -> Event:
    return ev("MODEL_PROMOTED", game=game, model_id=model, previous=previous)


def test_a_promotion_after_the_faults_holds_only_through_the_whole_gate() -> None:
    before = [accept("3x3k3", "m1"), promoted_in("3x3k3", "m1")]
    good = checks.After(
        events=[accept("4x4k3", "f1"), promoted_in("4x4k3", "f1")],
        champions={"3x3k3": [("m1", "")], "4x4k3": [("f1", "")]},
    )
    verdict = checks.promoted_after(good, before)
    assert verdict.held and verdict.note == "4x4k3 f1 over none"
    # Nothing promoted after the faults: rejections and decisions are not enough.
    none = checks.After(events=[ev("MODEL_REJECTED", game="3x3k3")], champions={})
    assert checks.promoted_after(none, before).violations == [
        "no model was promoted after the faults"
    ]
    # An earlier promotion announced again (a crash before its ack) is not a new one.
    again = checks.After(events=[promoted_in("3x3k3", "m1")], champions={"3x3k3": [("m1", "")]})
    assert not checks.promoted_after(again, before).held
    # Promoted without an accepting evaluation after the faults, or the key never moved.
    ungated = checks.After(events=[promoted_in("4x4k3", "f1")], champions={"4x4k3": [("f1", "")]})
    assert checks.promoted_after(ungated, before).violations == [
        "4x4k3 f1: promoted with no accepting evaluation before it"
    ]
    unmoved = dataclasses.replace(good, champions={"3x3k3": [("m1", "")]})
    assert checks.promoted_after(unmoved, before).violations == [
        "4x4k3 f1: announced, the champion key never moved to it"
    ]
    assert checks.promoted_after(None, before).note == "not waited for"
