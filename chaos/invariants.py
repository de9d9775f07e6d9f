"""The invariants a crash must not break, as pure functions of the durable record.

Each check takes what was read out of the event stream and the KV buckets (never logs)
and returns a Verdict: the invariant's name, whether it held, what was examined, and
the first few violations. Nothing here does I/O, so each check is tested alone against
hand-built good and bad records.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.contracts import ChildView, Event, InstanceView, Liveness, ServiceStatus
from shared.jobs import TERMINAL, JobRecord, JobState

#: Violations listed per invariant; the rest are only counted.
SHOWN = 5

TERMINAL_EVENTS = {
    "JOB_COMPLETED": JobState.COMPLETED,
    "JOB_FAILED": JobState.FAILED,
    "JOB_CANCELLED": JobState.CANCELLED,
}


@dataclass(frozen=True)
class Verdict:
    """One invariant's outcome."""

    name: str
    held: bool
    checked: int
    violations: list[str] = field(default_factory=list)
    #: What else the reader should know when it held.
    note: str = ""

    @property
    def summary(self) -> str:
        """One line for the PASS/FAIL table."""
        if self.held:
            return f"{self.checked} checked" + (f"; {self.note}" if self.note else "")
        shown = "; ".join(self.violations[:SHOWN])
        more = len(self.violations) - SHOWN
        return f"{len(self.violations)} violations: {shown}" + (
            f" (+{more} more)" if more > 0 else ""
        )


@dataclass(frozen=True)
class DurableRecord:
    """Everything the invariants look at, read once at the end of a run."""

    events: list[Event]
    jobs: dict[str, JobRecord]
    #: bucket -> key -> decoded JSON value, for every bucket whose records may name blobs.
    records: dict[str, dict[str, Any]]
    blobs: set[str]
    services: list[InstanceView]
    children: list[ChildView]
    #: Blobs the object store holds a deletion marker of (deleted, not lost).
    deleted: set[str] = field(default_factory=set)


def _verdict(name: str, checked: int, violations: list[str]) -> Verdict:
    return Verdict(name, not violations, checked, violations)


def _terminal(event: Event) -> JobState | None:
    state = TERMINAL_EVENTS.get(event.type)
    # A non-permanent JOB_FAILED ends one attempt, not the job.
    if state is JobState.FAILED and not event.data.get("permanent", False):
        return None
    return state


def jobs_terminal_once(events: Sequence[Event], jobs: dict[str, JobRecord]) -> Verdict:
    """Every submitted job has a record in one terminal state, announced exactly once."""
    submitted = {e.data["job_id"] for e in events if e.type == "JOB_SUBMITTED"}
    ends: dict[str, list[JobState]] = defaultdict(list)
    for event in events:
        state = _terminal(event)
        if state is not None:
            ends[event.data["job_id"]].append(state)
    bad: list[str] = []
    for job_id in sorted(submitted | set(jobs)):
        record = jobs.get(job_id)
        if record is None:
            bad.append(f"{job_id}: submitted but no record")
            continue
        if record.state not in TERMINAL:
            bad.append(f"{job_id}: still {record.state}")
            continue
        seen = ends.get(job_id, [])
        if len(seen) != 1:
            bad.append(f"{job_id}: {len(seen)} terminal events {[str(s) for s in seen]}")
        elif seen[0] is not record.state:
            bad.append(f"{job_id}: event says {seen[0]}, record says {record.state}")
    return _verdict("every job reached exactly one terminal state", len(submitted | set(jobs)), bad)


def completions_recorded(events: Iterable[Event], jobs: dict[str, JobRecord]) -> Verdict:
    """No JOB_COMPLETED without its COMPLETED record (same attempt)."""
    done = [e for e in events if e.type == "JOB_COMPLETED"]
    bad: list[str] = []
    for event in done:
        job_id = event.data["job_id"]
        record = jobs.get(job_id)
        if record is None:
            bad.append(f"{job_id}: completed event, no record")
        elif record.state is not JobState.COMPLETED:
            bad.append(f"{job_id}: completed event, record {record.state}")
        elif record.attempt != event.data.get("attempt"):
            bad.append(
                f"{job_id}: completed attempt {event.data.get('attempt')}, record {record.attempt}"
            )
    return _verdict("no JOB_COMPLETED without its record", len(done), bad)


def promotions_sound(events: Iterable[Event]) -> Verdict:
    """No model promoted twice; every promotion follows an accepting evaluation.

    The coordinator may repeat a decision's events after a crash (same model, same
    previous champion): that is one promotion told twice. Two different previous
    champions for one model, or two models replacing one champion, are two. An
    evaluation is one candidate against one champion: a retraining can reproduce a
    model byte for byte, so the same model may be rejected against another opponent
    (itself, once promoted) without that contradicting its promotion.
    """
    accepted: set[tuple[str, str, str]] = set()
    rejected: set[tuple[str, str, str]] = set()
    previous: dict[tuple[str, str], set[str]] = defaultdict(set)
    replaced: dict[tuple[str, str], set[str]] = defaultdict(set)
    bad: list[str] = []
    promotions = 0
    for event in events:
        data = event.data
        if event.type == "EVALUATION_COMPLETED":
            duel = (data["game"], data["candidate"], data.get("champion", ""))
            (accepted if data["decision"] == "accept" else rejected).add(duel)
        elif event.type == "MODEL_PROMOTED":
            promotions += 1
            key = (data["game"], data["model_id"])
            duel = (*key, data.get("previous", ""))
            if duel not in accepted:
                bad.append(f"{key[1]}: promoted without an accepting evaluation before it")
            if duel in rejected:
                bad.append(f"{key[1]}: promoted and rejected")
            previous[key].add(data.get("previous", ""))
            if data.get("previous"):
                replaced[(data["game"], data["previous"])].add(data["model_id"])
    bad += [f"{k[1]}: promoted over {sorted(v)}" for k, v in previous.items() if len(v) > 1]
    bad += [f"{k[1]}: replaced by {sorted(v)}" for k, v in replaced.items() if len(v) > 1]
    return _verdict("no model promoted twice or without a passing evaluation", promotions, bad)


def sequences_contiguous(events: Iterable[Event]) -> Verdict:
    """Per source and incarnation, sequence numbers run 1, 2, 3 ... with no gap.

    A restarted process is a new incarnation and must start cleanly at 1; a count that
    falls back within one incarnation is a loss, not a restart. Sequence 0 marks an
    announcement of a durable change (deterministic id, may be repeated): those are
    checked against the records they announce, not here.
    """
    last: dict[tuple[str, str], int] = {}
    bad: list[str] = []
    for event in events:
        if event.sequence == 0:
            continue
        key = (event.source, event.incarnation)
        name = f"{event.source}[{event.incarnation or '-'}]"
        prev = last.get(key)
        if prev is None and event.sequence != 1:
            bad.append(f"{name}: first event has sequence {event.sequence}")
        elif prev is not None and event.sequence != prev + 1:
            bad.append(f"{name}: {prev} then {event.sequence}")
        last[key] = event.sequence
    return _verdict("no gap in any source's event sequence", len(last), bad)


def data_refs(value: Any) -> Iterator[dict[str, Any]]:
    """Every DataRef-shaped object (name, sha256, size) inside a decoded JSON value."""
    if isinstance(value, dict):
        if isinstance(value.get("sha256"), str) and "size" in value:
            yield value
        for item in value.values():
            yield from data_refs(item)
    elif isinstance(value, list):
        for item in value:
            yield from data_refs(item)


#: Buckets whose every blob must stay: the data catalogue and the model records.
KEPT_BUCKETS = ("manifests", "models")


def blobs_present(
    records: dict[str, dict[str, Any]],
    blobs: set[str],
    events: Sequence[Event],
    deleted: set[str],
) -> Verdict:
    """Every blob a manifest or model record names is stored; job records' blobs too,
    except game data retention deleted.

    Retention (the sync planner, the one deleter of blobs) deletes game data that fell
    out of the training window and that no manifest, model or unfinished job needs; a
    finished job's record still names it. Such a blob may be missing only when the
    object store holds its deletion marker (``deleted``); a blob with neither object
    nor marker is lost data. The counts ``DATA_SYNC_COMPLETED`` announces are shown,
    not relied on: a sync planner killed between its deletes and that event's
    acknowledgement loses the count, not the blobs.
    """
    bad: list[str] = []
    checked = 0
    gone_from_jobs: set[str] = set()
    for bucket, entries in sorted(records.items()):
        for key, value in sorted(entries.items()):
            for ref in data_refs(value):
                checked += 1
                if ref["sha256"] in blobs:
                    continue
                if bucket in KEPT_BUCKETS:
                    bad.append(f"{bucket}/{key}: {ref.get('name')} {ref['sha256'][:12]} missing")
                else:
                    gone_from_jobs.add(ref["sha256"])
    announced = sum(
        int(e.data.get("deleted", 0)) for e in events if e.type == "DATA_SYNC_COMPLETED"
    )
    lost = sorted(gone_from_jobs - deleted)
    if lost:
        shown = ", ".join(sha[:12] for sha in lost[:SHOWN])
        bad.append(f"{len(lost)} blobs of job records lost (neither stored nor deleted): {shown}")
    note = f"{len(gone_from_jobs)} deleted by retention ({announced} deletions announced)"
    return Verdict("no referenced blob missing", not bad, checked, bad, note)


def services_running(services: list[InstanceView], children: list[ChildView]) -> Verdict:
    """Every supervised instance runs again, RUNNING and ALIVE."""
    views = {(v.service, v.instance): v for v in services}
    bad: list[str] = []
    for child in children:
        view = views.get((child.service, child.instance))
        if child.gave_up or not child.running:
            bad.append(f"{child.instance}: not running (gave up: {child.gave_up})")
        elif view is None:
            bad.append(f"{child.instance}: no beacon")
        elif view.status is not ServiceStatus.RUNNING or view.liveness is not Liveness.ALIVE:
            bad.append(f"{child.instance}: {view.status} {view.liveness}")
    if not children:
        bad.append("no supervised instance at all")
    return _verdict("every service RUNNING again", len(children), bad)


def check_all(record: DurableRecord) -> list[Verdict]:
    """Every invariant, in the order the table shows them."""
    return [
        jobs_terminal_once(record.events, record.jobs),
        completions_recorded(record.events, record.jobs),
        promotions_sound(record.events),
        sequences_contiguous(record.events),
        blobs_present(record.records, record.blobs, record.events, record.deleted),
        services_running(record.services, record.children),
    ]
