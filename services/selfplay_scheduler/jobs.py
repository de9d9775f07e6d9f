"""The scheduler's calls to the job manager, through one circuit breaker.

Each round reads the selfplay jobs that are queued (PENDING or DISPATCHED) and
RUNNING, then submits. Transport failures, timeouts and 5xx answers count against
the breaker; a 4xx answer is the job manager's verdict on our request, so it is
raised to the caller without opening the breaker.
"""

from __future__ import annotations

from collections import Counter
from typing import TypeVar

import msgspec
import nats.errors
from nats.aio.client import Client

from shared.circuit_breaker import CircuitBreaker
from shared.codec import decode, encode
from shared.errors import RequestError, error_for_code
from shared.intake import ERROR_CODE_HEADER, ERROR_HEADER
from shared.jobs import JobList, JobQuery, JobRecord, JobSpec, JobState
from shared.subjects import Subjects

T = TypeVar("T")

JOB_MANAGER = "job_manager"
#: The most jobs one ``list`` answers; the scheduler never queues nearly this many.
LIST_LIMIT = 10_000

#: What a call to the job manager may raise when it is down or refuses.
CallError = (nats.errors.Error, TimeoutError, RequestError, msgspec.DecodeError)


class QueueView(msgspec.Struct, frozen=True, kw_only=True):
    """The selfplay jobs the job manager holds that are not finished."""

    queued: int
    queued_by_game: dict[str, int]
    #: Job ids RUNNING per node.
    running: dict[str, list[str]]


def _game_of(rec: JobRecord) -> str:
    return rec.spec.labels.get("game", str(rec.spec.args.get("game", "")))


class JobManagerClient:
    """``list`` and ``submit`` on ``P.api.job_manager``, with timeouts and a breaker."""

    def __init__(
        self,
        nc: Client,
        subjects: Subjects,
        breaker: CircuitBreaker,
        *,
        timeout_s: float,
        job_type: str = "selfplay",
    ) -> None:
        self.nc = nc
        self.subjects = subjects
        self.breaker = breaker
        self.timeout_s = timeout_s
        self.job_type = job_type
        self.counts: Counter[str] = Counter()

    async def _request(self, method: str, payload: msgspec.Struct, tp: type[T]) -> T | RequestError:
        reply = await self.nc.request(
            self.subjects.api(JOB_MANAGER, method), encode(payload), timeout=self.timeout_s
        )
        headers = reply.headers or {}
        code = headers.get(ERROR_CODE_HEADER)
        if code is None:
            return decode(tp, reply.data)
        error = error_for_code(int(code), headers.get(ERROR_HEADER, f"error {code}"))
        if error.code >= 500:
            raise error  # the job manager is unwell: counts against the breaker
        return error

    async def call(self, method: str, payload: msgspec.Struct, tp: type[T]) -> T:
        """One request through the breaker; raises one of ``CallError``."""
        result = await self.breaker.call(self._request, method, payload, tp)
        if isinstance(result, RequestError):
            self.counts[f"{method}_refused"] += 1
            raise result
        return result

    async def _list(self, state: JobState) -> list[JobRecord]:
        query = JobQuery(state=state, type=self.job_type, limit=LIST_LIMIT)
        return (await self.call("list", query, JobList)).jobs

    async def queue_view(self) -> QueueView:
        """Queued (PENDING and DISPATCHED) and RUNNING selfplay jobs.

        Three lists are three moments: they are read in the order jobs move (PENDING,
        DISPATCHED, RUNNING), so a job that moved on in between shows up twice, never
        not at all, and the later list (its newer state) is the one that counts.
        """
        latest: dict[str, JobRecord] = {}
        for state in (JobState.PENDING, JobState.DISPATCHED, JobState.RUNNING):
            latest.update((rec.job_id, rec) for rec in await self._list(state))
        queued = [r for r in latest.values() if r.state is not JobState.RUNNING]
        running: dict[str, list[str]] = {}
        for rec in latest.values():
            if rec.state is JobState.RUNNING:
                running.setdefault(rec.node_id, []).append(rec.job_id)
        by_game: Counter[str] = Counter(_game_of(rec) for rec in queued)
        return QueueView(queued=len(queued), queued_by_game=dict(by_game), running=running)

    async def submit(self, spec: JobSpec, *, attempts: int = 2) -> JobRecord:
        """Submit ``spec``; a timed-out submit is sent again under the same idempotency key.

        The key makes the job manager answer a repeat with the job the first one created,
        so a reply lost on the way back never doubles a job.
        """
        for _ in range(attempts - 1):
            try:
                return await self.call("submit", spec, JobRecord)
            except (nats.errors.TimeoutError, TimeoutError):
                self.counts["submit_timeouts"] += 1
        return await self.call("submit", spec, JobRecord)
