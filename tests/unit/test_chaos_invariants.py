"""The chaos invariants against hand-built records: each holds on a good one, fails on a bad one."""

from __future__ import annotations

from typing import Any

import pytest

from chaos import invariants as inv
from shared.contracts import ChildView, Event, InstanceView, Liveness, ServiceStatus
from shared.jobs import JobRecord, JobSpec, JobState

SEQ: dict[str, int] = {}


def ev(
    type_: str,
    source: str = "/p/job_manager/jm-0",
    seq: int | None = None,
    incarnation: str = "",
    **data: Any,
) -> Event:
    """An event from ``source`` with the next sequence number (or ``seq``)."""
    SEQ[source] = seq if seq is not None else SEQ.get(source, 0) + 1
    return Event(
        id=f"{source}-{SEQ[source]}",
        source=source,
        type=type_,
        time="2026-01-01T00:00:00Z",
        sequence=SEQ[source],
        data=data,
        incarnation=incarnation,
    )


def job(job_id: str, state: JobState, attempt: int = 1) -> JobRecord:
    return JobRecord(
        job_id=job_id,
        spec=JobSpec(type="shell"),
        state=state,
        attempt=attempt,
        submitted_at=0.0,
        updated_at=0.0,
    )


@pytest.fixture(autouse=True)
def _fresh_sequences() -> None:
    SEQ.clear()


def lifecycle(job_id: str, end: str = "JOB_COMPLETED", **end_data: Any) -> list[Event]:
    return [
        ev("JOB_SUBMITTED", job_id=job_id, type="shell"),
        ev(end, job_id=job_id, type="shell", attempt=1, node_id="n", **end_data),
    ]


# -- every job reached exactly one terminal state -----------------------------------


def test_jobs_each_ended_once_hold() -> None:
    events = [
        *lifecycle("a"),
        ev("JOB_SUBMITTED", job_id="b", type="shell"),
        ev("JOB_FAILED", job_id="b", type="shell", attempt=1, error="x", permanent=False),
        ev("JOB_FAILED", job_id="b", type="shell", attempt=2, error="x", permanent=True),
    ]
    jobs = {"a": job("a", JobState.COMPLETED), "b": job("b", JobState.FAILED, 2)}
    verdict = inv.jobs_terminal_once(events, jobs)
    assert verdict.held, verdict.violations
    assert verdict.checked == 2


@pytest.mark.parametrize(
    ("events", "jobs", "says"),
    [
        (lifecycle("a")[:1], {}, "no record"),
        (lifecycle("a")[:1], {"a": job("a", JobState.RUNNING)}, "still RUNNING"),
        (lifecycle("a")[:1], {"a": job("a", JobState.COMPLETED)}, "0 terminal events"),
        (lifecycle("a") + lifecycle("a")[1:], {"a": job("a", JobState.COMPLETED)}, "2 terminal"),
        (lifecycle("a"), {"a": job("a", JobState.CANCELLED)}, "record says CANCELLED"),
    ],
)
def test_jobs_each_ended_once_fails(
    events: list[Event], jobs: dict[str, JobRecord], says: str
) -> None:
    verdict = inv.jobs_terminal_once(events, jobs)
    assert not verdict.held
    assert says in verdict.violations[0]


# -- no JOB_COMPLETED without its record ----------------------------------------------


def test_completion_with_its_record_holds() -> None:
    verdict = inv.completions_recorded(lifecycle("a"), {"a": job("a", JobState.COMPLETED)})
    assert verdict.held and verdict.checked == 1


@pytest.mark.parametrize(
    ("jobs", "says"),
    [
        ({}, "no record"),
        ({"a": job("a", JobState.FAILED)}, "record FAILED"),
        ({"a": job("a", JobState.COMPLETED, attempt=2)}, "record 2"),
    ],
)
def test_completion_without_its_record_fails(jobs: dict[str, JobRecord], says: str) -> None:
    verdict = inv.completions_recorded(lifecycle("a"), jobs)
    assert not verdict.held and says in verdict.violations[0]


# -- promotions -------------------------------------------------------------------------

TC = "/p/training_coordinator/tc-0"


def evaluated(candidate: str, decision: str = "accept", champion: str = "m0") -> Event:
    return ev(
        "EVALUATION_COMPLETED",
        TC,
        game="3x3k3",
        candidate=candidate,
        champion=champion,
        wins=1,
        losses=0,
        draws=0,
        llr=3.0,
        decision=decision,
    )


def promoted(model: str, previous: str = "m0") -> Event:
    return ev("MODEL_PROMOTED", TC, game="3x3k3", model_id=model, generation=1, previous=previous)


def test_promotions_after_accepting_evaluations_hold() -> None:
    # A decision repeated after a crash (same model, same previous) is one promotion.
    events = [evaluated("m1"), promoted("m1"), evaluated("m1"), promoted("m1")]
    events += [evaluated("m2", champion="m1"), promoted("m2", previous="m1")]
    events += [evaluated("m3", "reject", champion="m2")]
    # A retraining reproduced m2 byte for byte: rejected against itself, as it should be.
    events += [evaluated("m2", "reject", champion="m2")]
    verdict = inv.promotions_sound(events)
    assert verdict.held, verdict.violations
    assert verdict.checked == 3


@pytest.mark.parametrize(
    ("events", "says"),
    [
        ([promoted("m1")], "without an accepting evaluation"),
        ([promoted("m1"), evaluated("m1")], "without an accepting evaluation"),
        ([evaluated("m1", "reject"), promoted("m1")], "without an accepting"),
        ([evaluated("m1"), evaluated("m1", "reject"), promoted("m1")], "promoted and rejected"),
        ([evaluated("m1"), promoted("m1"), promoted("m1", previous="m5")], "promoted over"),
        ([evaluated("m1"), evaluated("m2"), promoted("m1"), promoted("m2")], "replaced by"),
    ],
)
def test_unsound_promotions_fail(events: list[Event], says: str) -> None:
    verdict = inv.promotions_sound(events)
    assert not verdict.held
    assert any(says in v for v in verdict.violations), verdict.violations


# -- sequences ----------------------------------------------------------------------------


def test_sequences_with_restarts_hold() -> None:
    a, b = "/p/x/x-0", "/p/y/y-0"
    events = [
        ev("E", a, incarnation="a1"),
        ev("E", b, incarnation="b1"),
        ev("E", a, incarnation="a1"),
        ev("E", a, seq=1, incarnation="a2"),
        ev("E", b, incarnation="b1"),
        ev("E", a, incarnation="a2"),
        ev("E", a, seq=0, incarnation="a2"),  # an announcement: outside the count
    ]
    verdict = inv.sequences_contiguous(events)
    assert verdict.held and verdict.checked == 3  # a ran twice, b once


def test_a_count_restarting_within_one_incarnation_fails() -> None:
    # Failed before the fix: a fall back to 1 was taken for a restart, so the events
    # lost between (here 4 and on) were invisible. A restart is a new incarnation now.
    events = [ev("E", "/p/x/x-0", seq=s, incarnation="i1") for s in (1, 2, 3, 1, 2)]
    verdict = inv.sequences_contiguous(events)
    assert not verdict.held and "3 then 1" in verdict.violations[0]


def test_a_new_incarnation_must_start_at_one() -> None:
    events = [
        ev("E", "/p/x/x-0", seq=1, incarnation="i1"),
        ev("E", "/p/x/x-0", seq=2, incarnation="i2"),
    ]
    verdict = inv.sequences_contiguous(events)
    assert not verdict.held and "first event has sequence 2" in verdict.violations[0]


@pytest.mark.parametrize(
    ("sequences", "says"),
    [([1, 2, 4], "2 then 4"), ([2, 3], "first event has sequence 2"), ([1, 2, 2], "2 then 2")],
)
def test_sequence_gaps_fail(sequences: list[int], says: str) -> None:
    events = [ev("E", "/p/x/x-0", seq=s) for s in sequences]
    verdict = inv.sequences_contiguous(events)
    assert not verdict.held and says in verdict.violations[0]


# -- blobs --------------------------------------------------------------------------------

SHA_A, SHA_B = "a" * 64, "b" * 64


def test_referenced_blobs_present_hold() -> None:
    records = {
        "jobs": {"j": {"result": {"outputs": [{"name": "o", "sha256": SHA_A, "size": 1}]}}},
        "models": {"model.x": {"ref": {"name": "m", "sha256": SHA_B, "size": 2}}, "idem": None},
    }
    verdict = inv.blobs_present(records, {SHA_A, SHA_B}, [], set())
    assert verdict.held and verdict.checked == 2


def retired(deleted: int) -> list[Event]:
    return [ev("DATA_SYNC_COMPLETED", "/p/sync_planner/sp-0", game="c", blobs=1, deleted=deleted)]


JOB_OUTPUT = {"jobs": {"j": {"result": {"outputs": [{"name": "g", "sha256": SHA_A, "size": 1}]}}}}


def test_a_job_blob_retention_deleted_holds_even_when_its_count_was_never_announced() -> None:
    verdict = inv.blobs_present(JOB_OUTPUT, set(), retired(1), {SHA_A})
    assert verdict.held, verdict.violations
    assert "1 deleted by retention (1 deletions announced)" in verdict.summary
    # Killed between its deletes and the event: the count is lost, the marker is not.
    assert inv.blobs_present(JOB_OUTPUT, set(), retired(0), {SHA_A}).held


def test_a_job_blob_gone_without_a_deletion_marker_fails_whatever_was_announced() -> None:
    verdict = inv.blobs_present(JOB_OUTPUT, set(), retired(1), set())
    assert not verdict.held and "1 blobs of job records lost" in verdict.violations[0]


def test_a_missing_manifest_or_model_blob_fails_even_after_deletions() -> None:
    records = {
        "manifests": {"3x3k3": {"entries": [{"ref": {"name": "g", "sha256": SHA_B, "size": 3}}]}}
    }
    verdict = inv.blobs_present(records, {SHA_A}, retired(5), {SHA_B})
    assert not verdict.held and "manifests/3x3k3" in verdict.violations[0]


# -- services -----------------------------------------------------------------------------


def view(
    instance: str, status: ServiceStatus = ServiceStatus.RUNNING, alive: bool = True
) -> InstanceView:
    return InstanceView(
        service=instance.rsplit("-", 1)[0],
        instance=instance,
        host="h",
        pid=1,
        version="1",
        status=status,
        liveness=Liveness.ALIVE if alive else Liveness.LOST,
        healthy=True,
        started_at=0.0,
        last_seen=0.0,
        beacon_seq=1,
        interval_s=1.0,
    )


def child(instance: str, running: bool = True, gave_up: bool = False) -> ChildView:
    return ChildView(
        service=instance.rsplit("-", 1)[0],
        instance=instance,
        restart="permanent",
        pid=1 if running else None,
        running=running,
        restarts=3,
        gave_up=gave_up,
    )


def test_every_service_running_holds() -> None:
    verdict = inv.services_running([view("a-0"), view("b-0")], [child("a-0"), child("b-0")])
    assert verdict.held and verdict.checked == 2


@pytest.mark.parametrize(
    ("views", "children", "says"),
    [
        ([view("a-0")], [child("a-0", running=False, gave_up=True)], "gave up: True"),
        ([], [child("a-0")], "no beacon"),
        ([view("a-0", ServiceStatus.DEGRADED)], [child("a-0")], "DEGRADED"),
        ([view("a-0", alive=False)], [child("a-0")], "LOST"),
        ([], [], "no supervised instance"),
    ],
)
def test_a_service_not_running_fails(
    views: list[InstanceView], children: list[ChildView], says: str
) -> None:
    verdict = inv.services_running(views, children)
    assert not verdict.held and says in verdict.violations[0]


def test_check_all_runs_every_invariant() -> None:
    record = inv.DurableRecord(
        events=lifecycle("a"),
        jobs={"a": job("a", JobState.COMPLETED)},
        records={},
        blobs=set(),
        services=[view("a-0")],
        children=[child("a-0")],
    )
    verdicts = inv.check_all(record)
    assert len(verdicts) == 6 and all(v.held for v in verdicts)
