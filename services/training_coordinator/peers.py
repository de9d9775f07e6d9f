"""Requests to the services the coordinator depends on, each behind a circuit breaker.

The job manager (``submit``, ``get``), the sync planner (``training_data``, ``prefetch``) and the
node selector (``select``). Every failure (no responder, timeout, an error reply, a
reply that does not decode) raises :class:`PeerError` or the breaker's
``CircuitOpenError``, both ``Unavailable``: callers decide what a failure means.
"""

from __future__ import annotations

from collections import Counter
from typing import TypeVar

import msgspec
import nats.errors
from nats.aio.client import Client

from shared import tracing
from shared.circuit_breaker import CircuitBreaker
from shared.codec import decode, encode
from shared.contracts import ErrorReply
from shared.errors import Unavailable
from shared.intake import ERROR_CODE_HEADER
from shared.jobs import JobRecord, JobRef, JobSpec, Requirements, SelectReply, SelectRequest
from shared.subjects import Subjects
from shared.training import PrefetchRequest, TrainingData, TrainingDataRequest

T = TypeVar("T")

JOB_MANAGER = "job_manager"
SYNC_PLANNER = "sync_planner"
NODE_SELECTOR = "node_selector"
PEERS = (JOB_MANAGER, SYNC_PLANNER, NODE_SELECTOR)


class PeerError(Unavailable):
    """A dependency did not give a usable answer."""


class Peers:
    """Typed calls to the other services, counted per outcome."""

    def __init__(
        self,
        nc: Client,
        subjects: Subjects,
        breakers: dict[str, CircuitBreaker],
        *,
        timeout_s: float,
    ) -> None:
        self.nc = nc
        self.subjects = subjects
        self.breakers = breakers
        self.timeout_s = timeout_s
        self.counts: Counter[str] = Counter()

    async def _raw(self, service: str, method: str, payload: msgspec.Struct) -> bytes:
        subject = self.subjects.api(service, method)
        try:
            # Inside a generation's span the request carries it (a job joins its trace).
            msg = await self.nc.request(
                subject, encode(payload), timeout=self.timeout_s, headers=tracing.outgoing()
            )
        except nats.errors.NoRespondersError:
            raise PeerError(f"nobody answers on {subject}") from None
        except (nats.errors.Error, TimeoutError) as exc:
            raise PeerError(f"{subject}: {exc!r}") from None
        code = (msg.headers or {}).get(ERROR_CODE_HEADER)
        if code is not None:
            try:
                message = decode(ErrorReply, msg.data).error.message
            except (msgspec.DecodeError, msgspec.ValidationError):
                message = msg.data[:200].decode("utf-8", errors="replace")
            raise PeerError(f"{subject} answered {code}: {message}")
        return msg.data

    async def _call(self, service: str, method: str, payload: msgspec.Struct, reply: type[T]) -> T:
        async def once() -> T:
            data = await self._raw(service, method, payload)
            try:
                return decode(reply, data)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise PeerError(
                    f"{service}.{method} answered something unreadable: {exc}"
                ) from None

        try:
            result = await self.breakers[service].call(once)
        except Unavailable:
            self.counts[f"{service}.{method}:failed"] += 1
            raise
        self.counts[f"{service}.{method}:ok"] += 1
        return result

    async def submit(self, spec: JobSpec) -> JobRecord:
        """Submit a job (its idempotency key makes a repeat return the same job)."""
        return await self._call(JOB_MANAGER, "submit", spec, JobRecord)

    async def job(self, job_id: str) -> JobRecord:
        """The job manager's record of ``job_id``."""
        return await self._call(JOB_MANAGER, "get", JobRef(job_id=job_id), JobRecord)

    async def training_data(self, request: TrainingDataRequest) -> TrainingData:
        """The sync planner's window of a game's newest data."""
        return await self._call(SYNC_PLANNER, "training_data", request, TrainingData)

    async def prefetch(self, request: PrefetchRequest) -> None:
        """Ask the sync planner to cache blobs on a node; any non-error reply is success."""
        await self._call(SYNC_PLANNER, "prefetch", request, msgspec.Raw)

    async def select(self, requirement: Requirements, *, preference: bool = False) -> str | None:
        """The node selector's best node for ``requirement``, or None when none fits."""
        request = SelectRequest(requirement=requirement, preference=preference)
        reply = await self._call(NODE_SELECTOR, "select", request, SelectReply)
        return reply.nodes[0] if reply.nodes else None
