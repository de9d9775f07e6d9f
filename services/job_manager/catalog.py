"""The index, plus a small summary of every terminal job still in the jobs bucket.

``JobIndex`` keeps full records of the non-terminal jobs only. Listing terminal jobs
used to scan the whole bucket on every call; the catalog keeps what a listing filters
and sorts on (submitted time, id, state, type, node) for the terminal jobs too, fed by
the same watch, so ``list`` and ``counts`` never scan. Full terminal records are read
by key for the one page being answered. History retirement uses it to find jobs due.
"""

from __future__ import annotations

import bisect
import heapq
from collections import Counter
from collections.abc import Iterator
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


Entry = tuple[float, str, JobRecord | None]


class JobCatalog(JobIndex):
    """A JobIndex that also remembers a Summary of each terminal job in the bucket.

    The terminal jobs are also kept in order of ``(submitted_at, job_id)`` and counted
    per state as they come and go, so a page is read from its cursor on without
    sorting or counting 20,000 summaries per request.
    """

    def __init__(self) -> None:
        super().__init__()
        self.terminal: dict[str, Summary] = {}
        self._order: list[tuple[float, str]] = []
        self._per_state: Counter[JobState] = Counter()

    def _add(self, summary: Summary) -> None:
        self._drop(summary.job_id)
        self.terminal[summary.job_id] = summary
        bisect.insort(self._order, (summary.submitted_at, summary.job_id))  # mostly appends
        self._per_state[summary.state] += 1

    def _drop(self, job_id: str) -> None:
        old = self.terminal.pop(job_id, None)
        if old is None:
            return
        at = bisect.bisect_left(self._order, (old.submitted_at, job_id))
        del self._order[at]
        self._per_state[old.state] -= 1

    def apply(self, record: JobRecord, revision: int) -> None:
        """As JobIndex.apply; a terminal record also updates its summary."""
        known = self.terminal.get(record.job_id)
        if known is not None and known.revision >= revision:
            # Older than the terminal revision held (a late watch delivery): JobIndex
            # forgets terminal jobs, so it alone would take this for a live job again.
            return
        super().apply(record, revision)
        if record.state in TERMINAL:
            self._add(summarize(record, revision))
        else:
            self._drop(record.job_id)

    def revision_of(self, job_id: str) -> int:
        """As JobIndex.revision_of, terminal summaries included."""
        summary = self.terminal.get(job_id)
        return max(super().revision_of(job_id), 0 if summary is None else summary.revision)

    def forget(self, job_id: str) -> None:
        """As JobIndex.forget; the job left the bucket (deleted or retired)."""
        super().forget(job_id)
        self._drop(job_id)

    def ordered(self, q: JobQuery, before: tuple[float, str] | None) -> Iterator[Entry]:
        """Jobs passing ``q``'s filters, newest first, strictly before ``before`` if given.

        Non-terminal jobs come with their record; terminal ones with None (read by key).
        """
        live: list[Entry] = []
        if q.state is None or q.state not in TERMINAL:
            for rec in self.records():
                key = (rec.submitted_at, rec.job_id)
                if (before is None or key < before) and passes(
                    rec.state, rec.spec.type, rec.node_id, q
                ):
                    live.append((*key, rec))
            live.sort(key=lambda e: (e[0], e[1]), reverse=True)
        if q.state is not None and q.state not in TERMINAL:
            return iter(live)
        return heapq.merge(live, self._terminal_before(q, before), key=_key, reverse=True)

    def _terminal_before(self, q: JobQuery, before: tuple[float, str] | None) -> Iterator[Entry]:
        end = len(self._order) if before is None else bisect.bisect_left(self._order, before)
        # A copy (a memcpy): the watch changes the order while a page awaits its reads.
        order, terminal, jobs = self._order[:end], self.terminal, self.jobs
        for i in range(end - 1, -1, -1):
            submitted_at, job_id = order[i]
            s = terminal.get(job_id)
            if s is not None and job_id not in jobs and passes(s.state, s.type, s.node_id, q):
                yield (submitted_at, job_id, None)

    def total(self, q: JobQuery) -> int:
        """How many jobs pass ``q``'s filters (from the counters when only state filters)."""
        if q.type or q.node_id:
            return sum(1 for _ in self.ordered(q, None))
        live = self.counts()
        if q.state is None:
            return sum(live.values()) + sum(self._per_state.values())
        return self._per_state[q.state] if q.state in TERMINAL else live.get(q.state.value, 0)

    def due(self, finished_before: float, limit: int) -> list[Summary]:
        """Up to ``limit`` terminal jobs that finished before ``finished_before``, oldest first."""
        due = [s for s in self.terminal.values() if s.finished_at < finished_before]
        due.sort(key=lambda s: s.finished_at)
        return due[:limit]

    def all_counts(self) -> dict[str, int]:
        """Jobs per state in the bucket, terminal ones included (every state listed)."""
        counts = count_states(self.records())
        for state, n in self._per_state.items():
            counts[state.value] += n
        return counts

    def details(self) -> dict[str, Any]:
        """Index details plus how many terminal jobs the catalog holds."""
        return {**super().details(), "terminal": len(self.terminal)}


def _key(entry: Entry) -> tuple[float, str]:
    return entry[0], entry[1]
