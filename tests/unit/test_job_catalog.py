"""The job manager's catalog: order, filters and counts of live and terminal jobs."""

from __future__ import annotations

import msgspec

from services.job_manager.catalog import JobCatalog
from shared.jobs import JobQuery, JobRecord, JobSpec, JobState

S = JobState


def rec(i: int, state: JobState, type_: str = "a") -> JobRecord:
    return JobRecord(
        job_id=f"j{i:03d}",
        spec=JobSpec(type=type_),
        state=state,
        submitted_at=float(i),
        updated_at=float(i),
        finished_at=float(i) if state in (S.COMPLETED, S.FAILED, S.CANCELLED) else None,
    )


def ids(catalog: JobCatalog, q: JobQuery, before: tuple[float, str] | None = None) -> list[str]:
    return [job_id for _, job_id, _ in catalog.ordered(q, before)]


def test_live_and_terminal_jobs_merge_newest_first_and_page_from_a_position() -> None:
    c = JobCatalog()
    for i in range(10):
        c.apply(rec(i, S.COMPLETED if i % 2 else S.PENDING, "b" if i % 3 == 0 else "a"), i + 1)
    assert ids(c, JobQuery()) == [f"j{i:03d}" for i in range(9, -1, -1)]
    assert ids(c, JobQuery(), before=(5.0, "j005")) == ["j004", "j003", "j002", "j001", "j000"]
    assert ids(c, JobQuery(state=S.PENDING)) == ["j008", "j006", "j004", "j002", "j000"]
    assert ids(c, JobQuery(state=S.COMPLETED, type="b")) == ["j009", "j003"]
    assert c.total(JobQuery()) == 10 and c.total(JobQuery(state=S.COMPLETED)) == 5
    assert c.total(JobQuery(type="b")) == 4
    assert c.all_counts()["COMPLETED"] == 5 and c.all_counts()["PENDING"] == 5


def test_a_job_changes_place_once_and_older_revisions_do_not_win() -> None:
    c = JobCatalog()
    c.apply(rec(1, S.PENDING), 1)
    c.apply(rec(1, S.CANCELLED), 3)
    c.apply(rec(1, S.PENDING), 2)  # a late delivery of an older revision
    assert ids(c, JobQuery()) == ["j001"] and c.total(JobQuery(state=S.CANCELLED)) == 1
    assert c.total(JobQuery(state=S.PENDING)) == 0
    c.apply(rec(1, S.CANCELLED), 4)  # the same job again: counted once
    assert c.all_counts()["CANCELLED"] == 1
    c.forget("j001")
    assert ids(c, JobQuery()) == [] and c.all_counts()["CANCELLED"] == 0
    assert c.due(10.0, 5) == []


def test_the_revision_held_covers_live_owed_and_terminal_jobs() -> None:
    # The watch skips decoding any delivery at or below this revision.
    c = JobCatalog()
    assert c.revision_of("j001") == 0
    c.apply(rec(1, S.RUNNING), 3)
    assert c.revision_of("j001") == 3
    owed = msgspec.structs.replace(rec(2, S.COMPLETED), announced=False)  # event owed
    c.apply(owed, 7)
    assert c.revision_of("j002") == 7 and "j002" in c.owed
    c.apply(msgspec.structs.replace(owed, announced=True), 8)
    assert "j002" not in c.owed and c.revision_of("j002") == 8  # from its summary
    c.forget("j002")
    assert c.revision_of("j002") == 0
