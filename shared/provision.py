"""Idempotent provisioning of streams: create when missing, update when changed.

Several services may start at once and each ensures what it needs; the server treats
an identical ``add_stream`` as a no-op, and a changed one is applied as an update.
"""

from __future__ import annotations

import logging

from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError

from shared.config import BaseConfig
from shared.subjects import Subjects

log = logging.getLogger("ringmaster.provision")

_COMPARED = ("subjects", "retention", "max_age", "max_bytes", "num_replicas", "duplicate_window")


async def ensure_stream(js: JetStreamContext, config: StreamConfig) -> bool:
    """Create or update the stream; True when something changed."""
    try:
        info = await js.stream_info(config.name or "")
    except NotFoundError:
        await js.add_stream(config)
        log.info("created stream %s", config.name)
        return True
    current = info.config
    if all(getattr(current, f) == getattr(config, f) for f in _COMPARED):
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
