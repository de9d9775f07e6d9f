"""What the rest of the cluster still needs: blobs named by live jobs and model records.

Retention asks this right before it decides. The jobs bucket (the job manager's) and
the models bucket (the training coordinator's) are only read here. A record that
does not decode is counted, and every sha256-looking string in it is protected: an
unreadable record must never let its blob be deleted.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable

import msgspec
from nats.js.kv import KeyValue

from services.sync_planner import policy
from shared.codec import decode
from shared.jobs import JobRecord
from shared.kv import read_all

#: Keys of the jobs bucket that map an idempotency key to a job_id, not a record.
IDEM_PREFIX = "idem-"


async def values(kv: KeyValue) -> list[tuple[str, bytes]]:
    """Every current (key, value) of a bucket, deleted keys left out (a bounded scan:
    a short one here would let retention delete a blob that is still referenced)."""
    return [(key, value) for key, (value, _) in (await read_all(kv)).items() if value]


class Handouts:
    """Blobs recently handed out to a client, protected until their grace ends.

    Between ``training_data`` answering and the training job being submitted, only
    this keeps retention from deleting what the client is about to use.
    """

    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s
        self._until: dict[str, float] = {}

    def protect(self, shas: Iterable[str]) -> None:
        """Protect ``shas`` for the grace period from now."""
        until = time.monotonic() + self.grace_s
        for sha in shas:
            self._until[sha] = max(until, self._until.get(sha, 0.0))

    def current(self) -> set[str]:
        """The blobs still protected (expired ones forgotten)."""
        now = time.monotonic()
        self._until = {sha: t for sha, t in self._until.items() if t > now}
        return set(self._until)


class References:
    """Scans the jobs and models buckets for the blobs they refer to."""

    def __init__(self, *, jobs: KeyValue, models: KeyValue, handouts: Handouts) -> None:
        self.jobs = jobs
        self.models = models
        self.handouts = handouts
        self.counts: Counter[str] = Counter()

    async def scan(self) -> set[str]:
        """Every blob a live job, a model record or a recent handout refers to."""
        referenced = await self._jobs()
        referenced |= await self._models()
        referenced |= self.handouts.current()
        self.counts["scans"] += 1
        return referenced

    async def _jobs(self) -> set[str]:
        found: set[str] = set()
        for key, raw in await values(self.jobs):
            if key.startswith(IDEM_PREFIX):
                continue
            try:
                found |= policy.job_inputs(decode(JobRecord, raw))
            except (msgspec.DecodeError, msgspec.ValidationError):
                self.counts["undecodable_jobs"] += 1
                found |= policy.raw_shas(raw)
        return found

    async def _models(self) -> set[str]:
        found: set[str] = set()
        for _, raw in await values(self.models):
            shas, decoded = policy.model_refs(raw)
            if not decoded:
                self.counts["undecodable_models"] += 1
            found |= shas
        return found
