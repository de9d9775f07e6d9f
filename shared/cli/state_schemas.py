"""Which Struct each key of each bucket holds, to check a snapshot before it is imported.

``ringmaster state import`` decodes every value of a snapshot with the Struct its
owner writes there (strictly, as the owner reads it back) and refuses the whole file
when one does not decode, naming the bucket, the key and why: nothing is written.
Keys a bucket's owner never writes are refused too.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable

import msgspec

from shared.codec import decode
from shared.jobs import JobRecord, NodeInfo
from shared.kv import LeaseRecord
from shared.snapshot import EPOCH_KEY, SCHEMA_KEY, EpochRecord, SchemaRecord
from shared.training import Champion, Manifest, ModelRecord

#: A check of one value: raises ValueError (or a msgspec error) when it is bad.
Check = Callable[[bytes], object]


def _struct(tp: type[msgspec.Struct]) -> Check:
    return lambda data: decode(tp, data)


def _job_id(data: bytes) -> str:
    # An idempotency key's value is the job_id it names.
    text = data.decode("ascii")
    if not re.fullmatch(r"[0-9a-f]{32}", text):
        raise ValueError("an idempotency key must hold a job id (32 hex digits)")
    return text


def _rules() -> dict[str, list[tuple[str, Check]]]:
    """Per bucket short name: (key pattern, check) pairs, first match wins."""
    # The owners' records live with their services: imported here, when checking.
    from services.selfplay_scheduler.api import (
        ALLOCATION_KEY,
        COUNTERS_KEY,
        OVERRIDES_KEY,
        SIGNALS_KEY,
        Counters,
        Overrides,
        Priorities,
    )
    from services.selfplay_scheduler.signals import Signals
    from services.training_coordinator.records import CoordinatorState

    return {
        "jobs": [(r"idem-.+", _job_id), (r".+", _struct(JobRecord))],
        "history": [(r".+", _struct(JobRecord))],  # retired jobs (job manager)
        "nodes": [(r".+", _struct(NodeInfo))],
        "models": [
            (r"state\..+", _struct(CoordinatorState)),
            (r"champion\..+", _struct(Champion)),
            (r"model\..+", _struct(ModelRecord)),
        ],
        "scheduler": [
            (re.escape(OVERRIDES_KEY), _struct(Overrides)),
            (re.escape(COUNTERS_KEY), _struct(Counters)),
            (re.escape(ALLOCATION_KEY), _struct(Priorities)),
            (re.escape(SIGNALS_KEY), _struct(Signals)),
        ],
        "manifests": [(r".+", _struct(Manifest))],
        "leases": [(r".+", _struct(LeaseRecord))],
        "state": [
            (re.escape(SCHEMA_KEY), _struct(SchemaRecord)),
            (re.escape(EPOCH_KEY), _struct(EpochRecord)),
        ],
        "loops": [],  # the loop manager keeps nothing there yet
    }


def problems(buckets: dict[str, dict[str, str]], limit: int = 5) -> list[str]:
    """Up to ``limit`` records (base64, as in a snapshot) that do not decode, each named."""
    rules = _rules()
    found: list[str] = []
    for short, keys in sorted(buckets.items()):
        for key, text in sorted(keys.items()):
            try:
                data = base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError):
                found.append(f"{short}/{key}: the value is not base64")
                continue
            check = next((c for p, c in rules.get(short, []) if re.fullmatch(p, key)), None)
            if check is None:
                found.append(f"{short}/{key}: no record of that name is kept in {short}")
            else:
                try:
                    check(data)
                except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
                    found.append(f"{short}/{key}: {str(exc).splitlines()[0]}")
            if len(found) >= limit:
                return found
    return found
