"""Prefetch: a ``prefetch`` job pinned to a node puts blobs in its cache before training.

The job is submitted to the job manager by request/reply through a circuit breaker;
the node agent fetches (and sha256-checks) the inputs of any job before running it, and
the prefetch command itself does nothing. Its end arrives as a job event: completed
gives DATA_SYNC_COMPLETED, a permanent failure DATA_SYNC_FAILED, each once per job.
"""

from __future__ import annotations

import logging
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable

import msgspec
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.kv import KeyValue

from services.sync_planner.config import SyncPlannerConfig
from services.sync_planner.references import Handouts
from shared.circuit_breaker import CircuitBreaker
from shared.codec import decode, encode
from shared.contracts import ErrorReply
from shared.errors import BadRequest, ConfigError, Unavailable, error_for_code
from shared.events import DataSyncCompleted, DataSyncFailed, DataSyncStarted, EventData
from shared.intake import ERROR_CODE_HEADER
from shared.jobs import JobRecord, JobSpec, Requirements
from shared.kv import read
from shared.subjects import Subjects, check_token
from shared.training import PrefetchRequest

log = logging.getLogger("ringmaster.sync_planner.prefetch")

JOB_MANAGER = "job_manager"
KIND = "prefetch"
#: How many finished prefetch jobs are remembered to answer a redelivered event once.
REMEMBERED = 4096


class JobManagerError(Unavailable):
    """The job manager failed (5xx), did not answer, or was not there."""


class Prefetcher:
    """Submits prefetch jobs and turns their ends into DATA_SYNC_* events."""

    def __init__(
        self,
        *,
        nc: Client,
        jobs: KeyValue,
        subjects: Subjects,
        config: SyncPlannerConfig,
        breaker: CircuitBreaker,
        handouts: Handouts,
        emit: Callable[[EventData], Awaitable[bool]],
    ) -> None:
        self.nc = nc
        self.jobs = jobs
        self.subjects = subjects
        self.config = config
        self.breaker = breaker
        self.handouts = handouts
        self.emit = emit
        self.counts: Counter[str] = Counter()
        self._finished: OrderedDict[str, None] = OrderedDict()

    def spec(self, request: PrefetchRequest) -> JobSpec:
        """The prefetch job for ``request``."""
        return JobSpec(
            type=KIND,
            inputs=list(request.refs),
            requirements=Requirements(capability=KIND, node_id=request.node_id),
            timeout_s=self.config.prefetch_timeout_s,
            max_attempts=self.config.prefetch_max_attempts,
            labels={"kind": KIND, "game": request.game},
        )

    async def submit(self, request: PrefetchRequest) -> JobRecord:
        """Submit the prefetch job; DATA_SYNC_STARTED once the job manager took it."""
        if not request.refs:
            raise BadRequest("nothing to prefetch: refs is empty")
        try:
            check_token(request.node_id, "node_id")
        except ConfigError as exc:
            raise BadRequest(str(exc)) from exc
        # Protected from now: retention must not delete what is about to be fetched.
        self.handouts.protect(ref.sha256 for ref in request.refs)
        try:
            reply = await self.breaker.call(self._request, self.spec(request))
        except (nats.errors.Error, TimeoutError) as exc:
            self.counts["submit_failures"] += 1
            raise JobManagerError(f"job manager unavailable: {exc!r}") from exc
        except Unavailable:
            self.counts["submit_failures"] += 1
            raise
        code = (reply.headers or {}).get(ERROR_CODE_HEADER)
        if code is not None:
            self.counts["submit_refused"] += 1
            raise error_for_code(int(code), f"job manager refused the prefetch: {_message(reply)}")
        record = decode(JobRecord, reply.data)
        self.counts["submitted"] += 1
        await self.emit(
            DataSyncStarted(
                game=request.game,
                node_id=request.node_id,
                blobs=len(request.refs),
                bytes=sum(ref.size for ref in request.refs),
            )
        )
        return record

    async def _request(self, spec: JobSpec) -> Msg:
        reply = await self.nc.request(
            self.subjects.api(JOB_MANAGER, "submit"),
            encode(spec),
            timeout=self.config.submit_timeout_s,
        )
        code = (reply.headers or {}).get(ERROR_CODE_HEADER)
        # Only the job manager's own failures count against the breaker; a 4xx is ours.
        if code is not None and int(code) >= 500:
            raise JobManagerError(f"job manager answered error {code}")
        return reply

    def _first_time(self, job_id: str) -> bool:
        if job_id in self._finished:
            self.counts["redelivered"] += 1
            return False
        self._finished[job_id] = None
        while len(self._finished) > REMEMBERED:
            self._finished.popitem(last=False)
        return True

    async def _record(self, job_id: str) -> JobRecord | None:
        try:
            found = await read(self.jobs, job_id, JobRecord)
        except (msgspec.DecodeError, msgspec.ValidationError):
            self.counts["undecodable_jobs"] += 1
            return None
        return found[0] if found else None

    async def completed(self, job_id: str, node_id: str, game: str) -> None:
        """A prefetch job finished: its blobs are in the node's cache."""
        if not self._first_time(job_id):
            return
        record = await self._record(job_id)
        inputs = record.spec.inputs if record else []
        self.counts["completed"] += 1
        await self.emit(
            DataSyncCompleted(
                game=game,
                node_id=node_id,
                blobs=len(inputs),
                bytes=sum(ref.size for ref in inputs),
            )
        )

    async def failed(self, job_id: str, node_id: str, error: str) -> None:
        """A prefetch job failed for good (no attempt left)."""
        if not self._first_time(job_id):
            return
        record = await self._record(job_id)
        game = record.spec.labels.get("game", "") if record else ""
        if record is not None:
            node_id = record.spec.requirements.node_id or node_id
        self.counts["failed"] += 1
        await self.emit(DataSyncFailed(game=game, node_id=node_id, error=error))


def _message(reply: Msg) -> str:
    """The message of an error reply (its raw bytes if it is not one)."""
    try:
        return decode(ErrorReply, reply.data).error.message
    except (msgspec.DecodeError, msgspec.ValidationError):
        return repr(reply.data[:200])
