"""Reading the durable record of a cluster: the event stream, KV buckets, object store.

This is the only I/O the invariants depend on; what it returns is plain data
(``DurableRecord``) that :mod:`chaos.invariants` judges.
"""

from __future__ import annotations

from typing import Any

import anyio
import msgspec
import nats.errors
from nats.aio.client import Client
from nats.js.errors import NotFoundError

from chaos.invariants import DurableRecord
from shared.codec import decode, encode
from shared.contracts import ClusterStatus, Empty, ServiceMetrics
from shared.jobs import JobRecord
from shared.kv import read_all
from shared.provision import BUCKET_SPECS
from shared.subjects import Subjects
from shared.testing.helpers import stream_events
from shared.training import Champion

#: Keys of the jobs bucket that map an idempotency key to a job_id, not a record.
IDEM_PREFIX = "idem-"


async def bucket_values(nc: Client, bucket: str) -> dict[str, bytes]:
    """Every current key and value of a KV bucket (empty when it does not exist)."""
    js = nc.jetstream()
    try:
        kv = await js.key_value(bucket)
    except (NotFoundError, nats.js.errors.BucketNotFoundError):
        return {}
    return {key: value for key, (value, _) in (await read_all(kv)).items() if value}


async def kv_state(nc: Client, subjects: Subjects) -> dict[str, dict[str, bytes]]:
    """Every bucket of the catalogue: bucket short name -> key -> raw value."""
    return {name: await bucket_values(nc, subjects.bucket(name)) for name in BUCKET_SPECS}


async def blob_names(nc: Client, subjects: Subjects) -> tuple[set[str], set[str]]:
    """The names (sha256) of the blobs in the object store, and of those deleted.

    A delete leaves a marker (the object's info, ``deleted``): the store's own record
    that a blob was deleted rather than lost.
    """
    js = nc.jetstream()
    try:
        store = await js.object_store(subjects.data_store)
        infos = await store.list(ignore_deletes=False)
    except (NotFoundError, nats.js.errors.ObjectNotFoundError):
        return set(), set()
    return {i.name for i in infos if not i.deleted}, {i.name for i in infos if i.deleted}


async def cluster_status(nc: Client, subjects: Subjects, timeout: float = 3.0) -> ClusterStatus:
    """The orchestrator's view: every instance and every supervised child."""
    reply = await nc.request(subjects.api("orchestrator", "status"), encode(Empty()), timeout)
    return decode(ClusterStatus, reply.data)


def _json(raw: bytes) -> Any:
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return None  # not JSON (an idempotency mapping holds a bare job id)


def jobs_of(values: dict[str, bytes]) -> dict[str, JobRecord]:
    """The job records of the jobs bucket, keyed by job id."""
    return {
        key: decode(JobRecord, raw)
        for key, raw in values.items()
        if not key.startswith(IDEM_PREFIX)
    }


async def read_record(nc: Client, subjects: Subjects) -> DurableRecord:
    """The stream, buckets and blobs, read now (the instances are added by the caller)."""
    kv = await kv_state(nc, subjects)
    blobs, deleted = await blob_names(nc, subjects)
    return DurableRecord(
        events=await stream_events(nc, subjects.events_stream),
        jobs=jobs_of(kv["jobs"]),
        records={
            bucket: {key: _json(raw) for key, raw in kv[bucket].items()}
            for bucket in ("jobs", "models", "manifests")
        },
        blobs=blobs,
        services=[],
        children=[],
        deleted=deleted,
    )


async def stream_size(nc: Client, subjects: Subjects) -> int:
    """How many messages ``P_EVENTS`` says it holds now."""
    info = await nc.jetstream().stream_info(subjects.events_stream)
    return info.state.messages


async def champion_history(nc: Client, subjects: Subjects) -> dict[str, list[tuple[str, str]]]:
    """Per game, every model that took the champion key, with the one it replaced.

    Read from the key's history in the models bucket (its revisions), not from events.
    When the history is full its oldest entry's predecessor is unknown and it is left
    out: only switches seen whole are listed.
    """
    js = nc.jetstream()
    try:
        kv = await js.key_value(subjects.bucket("models"))
    except (NotFoundError, nats.js.errors.BucketNotFoundError):
        return {}
    depth, _ = BUCKET_SPECS["models"]
    found: dict[str, list[tuple[str, str]]] = {}
    for key, (value, _) in (await read_all(kv)).items():
        if not key.startswith("champion.") or not value:
            continue
        entries = [e for e in await kv.history(key) if e.value]
        ids = [decode(Champion, e.value or b"").model_id for e in entries]
        pairs = [(model, ids[i - 1] if i else "") for i, model in enumerate(ids)]
        found[key.removeprefix("champion.")] = pairs[1:] if len(entries) >= depth else pairs
    return found


async def instance_metrics(
    nc: Client, subjects: Subjects, instances: list[tuple[str, str]], patience: float = 10.0
) -> list[ServiceMetrics]:
    """The ``metrics`` of each (service, instance) that answers (its outbox counters).

    An event can be in flight at the moment of asking (the creators were just resumed):
    an instance with events pending is asked again for up to ``patience`` seconds, so
    only an outbox that stays behind is reported as such.
    """
    out: list[ServiceMetrics] = []
    for service, instance in instances:
        subject = subjects.instance_api(service, instance, "metrics")
        found: ServiceMetrics | None = None
        with anyio.move_on_after(patience):
            while found is None or found.events_pending:
                try:
                    reply = await nc.request(subject, encode(Empty()), timeout=3.0)
                    found = decode(ServiceMetrics, reply.data)
                except (
                    nats.errors.Error,
                    TimeoutError,
                    msgspec.DecodeError,
                    msgspec.ValidationError,
                ):
                    break  # not answering: the services-running invariant reports it
                if found.events_pending:
                    await anyio.sleep(0.5)
        if found is not None:
            out.append(found)
    return out
