"""The harness's own jobs and its own ledger of them: an independent record.

The invariants over the event stream can only check what the stream says was
submitted; a job whose JOB_SUBMITTED was lost in a crash is invisible there. So the
harness submits jobs of its own through the job manager's API, each under an
idempotency key it chose (a retried submit names the same job), writes down every
job id it was given, and cancels some of them while the faults go on. At the end each
one must be in the jobs bucket, terminal, and announced by exactly one terminal event.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import nats.errors
from nats.aio.client import Client

from shared.codec import decode, encode
from shared.intake import ERROR_CODE_HEADER
from shared.jobs import JobRecord, JobRef, JobSpec, Requirements
from shared.subjects import Subjects

#: Labels that keep the harness's jobs out of the sync planner's and coordinator's way.
LABELS = {"kind": "chaos", "game": "chaos"}


@dataclass
class Ledger:
    """What the harness submitted and cancelled, by job id."""

    submitted: dict[str, str] = field(default_factory=dict)  # idempotency key -> job id
    cancelled: set[str] = field(default_factory=set)
    unanswered: int = 0

    def spec(self, number: int, seed: int) -> JobSpec:
        """A small selfplay job the node agents can run."""
        return JobSpec(
            type="selfplay",
            args={"game": "3x3k3", "games": 8, "seed": seed, "exploration": 1.0},
            requirements=Requirements(capability="selfplay", pooled=True),
            labels=LABELS,
            timeout_s=120.0,
            max_attempts=3,
            idempotency_key=f"chaos-ledger-{seed}-{number}",
        )

    async def _request(self, nc: Client, subject: str, payload: bytes) -> JobRecord | None:
        try:
            reply = await nc.request(subject, payload, timeout=3.0)
        except (nats.errors.Error, TimeoutError):
            self.unanswered += 1  # the manager may be down: tried again next round
            return None
        if (reply.headers or {}).get(ERROR_CODE_HEADER):
            self.unanswered += 1
            return None
        return decode(JobRecord, reply.data)

    async def submit(self, nc: Client, subjects: Subjects, spec: JobSpec) -> None:
        """Submit ``spec`` (again, if an earlier try got no answer) and note its id."""
        record = await self._request(nc, subjects.api("job_manager", "submit"), encode(spec))
        if record is not None:
            self.submitted[spec.idempotency_key] = record.job_id

    async def cancel(self, nc: Client, subjects: Subjects, key: str) -> None:
        """Cancel the job submitted under ``key`` (if it got an id); noted when accepted."""
        job_id = self.submitted.get(key)
        if job_id is None:
            return
        ref = JobRef(job_id=job_id, reason="chaos ledger")
        record = await self._request(nc, subjects.api("job_manager", "cancel"), encode(ref))
        if record is not None:
            self.cancelled.add(job_id)

    async def catch_up(self, nc: Client, subjects: Subjects, seed: int, count: int) -> None:
        """Submit again every job of ``0..count`` that never got an answer."""
        for number in range(count):
            spec = self.spec(number, seed)
            if spec.idempotency_key not in self.submitted:
                await self.submit(nc, subjects, spec)
