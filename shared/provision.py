"""Idempotent provisioning of streams: create when missing, update when changed.

Several services may start at once and each ensures what it needs; the server treats
an identical ``add_stream`` as a no-op, and a changed one is applied as an update.
"""

from __future__ import annotations

import logging

from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError
from nats.js.kv import KeyValue

from shared.config import BaseConfig
from shared.subjects import Subjects

log = logging.getLogger("ringmaster.provision")

_COMPARED = ("subjects", "retention", "max_age", "max_bytes", "num_replicas", "duplicate_window")


# What the server reports for a limit left unset in the config we sent.
_UNSET = {"max_age": 0.0, "max_bytes": -1, "duplicate_window": 120.0}


def _norm(field: str, value: object) -> object:
    return _UNSET.get(field, value) if value is None else value


async def ensure_stream(js: JetStreamContext, config: StreamConfig) -> bool:
    """Create or update the stream; True when something changed."""
    try:
        info = await js.stream_info(config.name or "")
    except NotFoundError:
        await js.add_stream(config)
        log.info("created stream %s", config.name)
        return True
    current = info.config
    if all(_norm(f, getattr(current, f)) == _norm(f, getattr(config, f)) for f in _COMPARED):
        return False
    await js.update_stream(config)
    log.info("updated stream %s", config.name)
    return True


def events_stream_config(subjects: Subjects, config: BaseConfig) -> StreamConfig:
    """``P_EVENTS``: every event, limits retention, bounded by age and size."""
    return StreamConfig(
        name=subjects.events_stream,
        subjects=[subjects.events],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        max_age=config.events_max_age_s,
        max_bytes=config.events_max_bytes,
        num_replicas=config.replicas,
        duplicate_window=120.0,
    )


def logs_stream_config(subjects: Subjects, config: BaseConfig) -> StreamConfig:
    """``P_LOGS``: every service's log records, limits retention, bounded by age and size.

    Old records are discarded first, so the stream never refuses a record when full.
    """
    return StreamConfig(
        name=subjects.logs_stream,
        subjects=[subjects.logs],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        max_age=config.logs_max_age_s,
        max_bytes=config.logs_max_bytes,
        num_replicas=config.replicas,
        duplicate_window=120.0,
    )


#: KV buckets of the catalogue: short name -> (history, ttl seconds or None).
BUCKET_SPECS: dict[str, tuple[int, float | None]] = {
    "jobs": (5, None),
    "nodes": (1, None),
    "models": (10, None),
    "scheduler": (5, None),
    "manifests": (5, None),
    "leases": (1, None),
    "state": (5, None),
    "loops": (1, None),
    # Retired terminal jobs (job manager, services/job_manager/history.py): one value
    # per job_id, read by key; the age limit is the history's retention.
    "history": (1, 7 * 86400.0),
}


#: Consumers allowed on ``P_JOBS``: one durable per node plus one per capability. Left
#: unset, nats-server 2.15 refuses the 1,001st consumer of a stream, so a cluster of
#: 1,000 nodes could not even create its capability pool. Fixed when the stream is
#: created (the server does not change it on an existing stream).
JOBS_MAX_CONSUMERS = 100_000


def jobs_stream_config(subjects: Subjects, config: BaseConfig) -> StreamConfig:
    """``P_JOBS``: job dispatches, work-queue retention (a message lives until acked)."""
    return StreamConfig(
        max_consumers=JOBS_MAX_CONSUMERS,
        name=subjects.jobs_stream,
        subjects=[subjects.all_jobs],
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        num_replicas=config.replicas,
        duplicate_window=120.0,
    )


async def catalogue_bucket(
    js: JetStreamContext, subjects: Subjects, name: str, config: BaseConfig
) -> KeyValue:
    """The catalogue's KV bucket ``name`` (short name), created as specified if missing."""
    from shared.kv import bucket_config, ensure_bucket

    history, ttl = BUCKET_SPECS[name]
    spec = bucket_config(subjects.bucket(name), history=history, ttl=ttl, replicas=config.replicas)
    return await ensure_bucket(js, spec)


async def provision_all(js: JetStreamContext, subjects: Subjects, config: BaseConfig) -> None:
    """Every stream, bucket and the object store of the catalogue, idempotently."""
    from shared.blobs import ensure_store

    await ensure_stream(js, events_stream_config(subjects, config))
    await ensure_stream(js, logs_stream_config(subjects, config))
    await ensure_stream(js, jobs_stream_config(subjects, config))
    for name in BUCKET_SPECS:
        await catalogue_bucket(js, subjects, name, config)
    await ensure_store(js, subjects.data_store, replicas=config.replicas)
