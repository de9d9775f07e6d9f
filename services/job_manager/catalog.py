"""The index, plus a small summary of every terminal job still in the jobs bucket.

``JobIndex`` keeps full records of the non-terminal jobs only. Listing terminal jobs
used to scan the whole bucket on every call; the catalog keeps what a listing filters
and sorts on (submitted time, id, state, type, node) for the terminal jobs too, fed by
the same watch, so ``list`` and ``counts`` never scan. Full terminal records are read
by key for the one page being answered. History retirement uses it to find jobs due.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from services.job_manager.index import JobIndex, count_states
from shared.jobs import TERMINAL, JobQuery, JobRecord, JobState


class Summary(NamedTuple):
    """What listing and retirement need of a terminal job, without its record."""

    submitted_at: float
    job_id: str
    state: JobState
    type: str
    node_id: str
    finished_at: float
    revision: int


def summarize(record: JobRecord, revision: int) -> Summary:
    """The summary of a terminal ``record``."""
    return Summary(
        submitted_at=record.submitted_at,
        job_id=record.job_id,
        state=record.state,
        type=record.spec.type,
        node_id=record.node_id,
        finished_at=record.finished_at or record.updated_at,
        revision=revision,
    )


def passes(state: JobState, type_: str, node_id: str, q: JobQuery) -> bool:
    """Whether a job with these fields passes the filters of ``q``."""
    return (
        (q.state is None or state is q.state)
        and (not q.type or type_ == q.type)
        and (not q.node_id or node_id == q.node_id)
    )


class JobCatalog(JobIndex):
    """A JobIndex that also remembers a Summary of each terminal job in the bucket."""

    def __init__(self) -> None:
        super().__init__()
        self.terminal: dict[str, Summary] = {}

    def apply(self, record: JobRecord, revision: int) -> None:
        """As JobIndex.apply; a terminal record also updates its summary."""
        super().apply(record, revision)
        known = self.terminal.get(record.job_id)
        if known is not None and known.revision >= revision:
            return
        if record.state in TERMINAL:
            self.terminal[record.job_id] = summarize(record, revision)
        else:
            self.terminal.pop(record.job_id, None)

    def forget(self, job_id: str) -> None:
        """As JobIndex.forget; the job left the bucket (deleted or retired)."""
        super().forget(job_id)
        self.terminal.pop(job_id, None)

    def matching(self, q: JobQuery) -> list[tuple[float, str, JobRecord | None]]:
        """Sort keys of every job passing ``q``'s filters, with the record when in memory.

        Non-terminal jobs come with their record; terminal ones with None (read by key).
        """
        found: list[tuple[float, str, JobRecord | None]] = []
        if q.state is None or q.state not in TERMINAL:
            for rec in self.records():
                if passes(rec.state, rec.spec.type, rec.node_id, q):
                    found.append((rec.submitted_at, rec.job_id, rec))
        if q.state is None or q.state in TERMINAL:
            for s in self.terminal.values():
                if passes(s.state, s.type, s.node_id, q) and s.job_id not in self.jobs:
                    found.append((s.submitted_at, s.job_id, None))
        return found

    def due(self, finished_before: float, limit: int) -> list[Summary]:
        """Up to ``limit`` terminal jobs that finished before ``finished_before``, oldest first."""
        due = [s for s in self.terminal.values() if s.finished_at < finished_before]
        due.sort(key=lambda s: s.finished_at)
        return due[:limit]

    def all_counts(self) -> dict[str, int]:
        """Jobs per state in the bucket, terminal ones included (every state listed)."""
        counts = count_states(self.records())
        for s in self.terminal.values():
            counts[s.state.value] += 1
        return counts

    def details(self) -> dict[str, Any]:
        """Index details plus how many terminal jobs the catalog holds."""
        return {**super().details(), "terminal": len(self.terminal)}
