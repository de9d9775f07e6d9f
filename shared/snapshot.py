"""Cluster state records and snapshots: export and import of every KV bucket.

The state bucket holds the cluster's ``schema`` (``{"version": N}``) and ``epoch``
(``{"epoch": n, "created_at": t}``). A snapshot holds every key's latest value of every
bucket in the catalogue (base64), keyed by the bucket's short name, so a snapshot taken
under one prefix imports under another. An import refuses a cluster that already holds
state unless forced, writes every key (it never deletes one), then bumps the epoch so
every service can tell the cluster's history was replaced.
"""

from __future__ import annotations

import base64
import binascii
import time
from typing import Annotated, Any

import msgspec
from nats.js.client import JetStreamContext
from nats.js.errors import BucketNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from shared.codec import decode, encode
from shared.errors import ConfigError, RingmasterError
from shared.kv import bucket_config, ensure_bucket, read, read_all
from shared.provision import BUCKET_SPECS
from shared.subjects import Subjects

#: Version of the layout of the cluster's KV state; a different stored one is refused.
#: 2: records and events name the game (``game``, was ``config``); 1 is not read.
SCHEMA_VERSION = 2
#: Version of the snapshot file format.
SNAPSHOT_FORMAT = 1
SCHEMA_KEY = "schema"
EPOCH_KEY = "epoch"
#: State-bucket keys every state manager writes at start: not "state" for an import.
BOOKKEEPING_KEYS = frozenset({SCHEMA_KEY, EPOCH_KEY})


class SchemaError(ConfigError):
    """The cluster's stored schema version is not the one this release understands."""


class SnapshotError(RingmasterError):
    """A snapshot that cannot be read or imported (the message says why)."""


class SchemaRecord(msgspec.Struct, frozen=True, kw_only=True):
    """The ``schema`` key of the state bucket."""

    version: int


class EpochRecord(msgspec.Struct, frozen=True, kw_only=True):
    """The ``epoch`` key of the state bucket: bumped each time state is imported."""

    epoch: int
    created_at: float


class Snapshot(msgspec.Struct, frozen=True, kw_only=True):
    """Every key's latest value (base64) per bucket short name."""

    format: int = SNAPSHOT_FORMAT
    prefix: str
    created_at: float
    buckets: dict[str, dict[str, str]]


class ImportResult(msgspec.Struct, frozen=True, kw_only=True):
    """What an import wrote: keys per bucket, keys it left alone, the new epoch."""

    written: dict[str, int]
    kept: int
    epoch: int


def check_schema(stored: int, current: int = SCHEMA_VERSION) -> None:
    """Raise SchemaError naming both versions unless ``stored`` is ``current``."""
    if stored != current:
        raise SchemaError(
            f"cluster state schema version {stored} is not compatible with this release's "
            f"version {current}; migrate the cluster or run a release that speaks {stored}"
        )


def encode_snapshot(snapshot: Snapshot) -> bytes:
    """A snapshot as JSON bytes (what ``ringmaster state export`` writes)."""
    return encode(snapshot)


def decode_snapshot(data: bytes) -> Snapshot:
    """Read a snapshot; SnapshotError when it is not one or of an unknown format."""
    try:
        snapshot = decode(Snapshot, data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise SnapshotError(f"not a ringmaster snapshot: {exc}") from exc
    check_snapshot(snapshot)
    return snapshot


def check_snapshot(snapshot: Snapshot) -> None:
    """SnapshotError when ``snapshot`` has an unknown format or names unknown buckets."""
    if snapshot.format != SNAPSHOT_FORMAT:
        raise SnapshotError(
            f"snapshot format {snapshot.format} is not supported (expected {SNAPSHOT_FORMAT})"
        )
    unknown = sorted(set(snapshot.buckets) - set(BUCKET_SPECS))
    if unknown:
        raise SnapshotError(f"snapshot names unknown buckets: {', '.join(unknown)}")


async def _open(js: JetStreamContext, subjects: Subjects, short: str) -> KeyValue | None:
    try:
        return await js.key_value(subjects.bucket(short))
    except BucketNotFoundError:
        return None


async def export_state(js: JetStreamContext, subjects: Subjects) -> Snapshot:
    """Every bucket of the catalogue, every key's latest value; a missing bucket is empty."""
    buckets: dict[str, dict[str, str]] = {}
    for short in BUCKET_SPECS:
        kv = await _open(js, subjects, short)
        entries = await read_all(kv) if kv is not None else {}
        buckets[short] = {
            key: base64.b64encode(value).decode("ascii")
            for key, (value, _) in sorted(entries.items())
        }
    return Snapshot(prefix=subjects.prefix, created_at=time.time(), buckets=buckets)


def _values(snapshot: Snapshot) -> dict[str, dict[str, bytes]]:
    try:
        return {
            short: {key: base64.b64decode(text, validate=True) for key, text in keys.items()}
            for short, keys in snapshot.buckets.items()
        }
    except (binascii.Error, ValueError) as exc:
        raise SnapshotError(f"snapshot holds a value that is not base64: {exc}") from exc


def _snapshot_epoch(values: dict[str, dict[str, bytes]]) -> int:
    state = values.get("state", {})
    try:
        if SCHEMA_KEY in state:
            check_schema(decode(SchemaRecord, state[SCHEMA_KEY]).version)
        return decode(EpochRecord, state[EPOCH_KEY]).epoch if EPOCH_KEY in state else 0
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise SnapshotError(f"snapshot's state bucket does not decode: {exc}") from exc
    except SchemaError as exc:
        raise SnapshotError(f"snapshot refused: {exc}") from exc


async def _existing_keys(kvs: dict[str, KeyValue]) -> dict[str, set[str]]:
    existing: dict[str, set[str]] = {}
    for short, kv in kvs.items():
        keys = set(await read_all(kv))
        existing[short] = keys - BOOKKEEPING_KEYS if short == "state" else keys
    return existing


async def import_state(
    js: JetStreamContext,
    subjects: Subjects,
    snapshot: Snapshot,
    *,
    force: bool = False,
    replicas: int = 1,
) -> ImportResult:
    """Write ``snapshot`` into the cluster of ``subjects`` and bump the epoch.

    Refused (SnapshotError) when any bucket already holds a key, apart from the state
    bucket's schema and epoch, unless ``force``: then the snapshot's keys overwrite and
    keys it does not name are kept (an import never deletes). Buckets are created as the
    catalogue says when missing. The new epoch is one past the larger of the snapshot's
    and the cluster's.
    """
    check_snapshot(snapshot)
    values = _values(snapshot)
    snapshot_epoch = _snapshot_epoch(values)
    kvs: dict[str, KeyValue] = {}
    for short, (history, ttl) in BUCKET_SPECS.items():
        name = subjects.bucket(short)
        config = bucket_config(name, history=history, ttl=ttl, replicas=replicas)
        kvs[short] = await ensure_bucket(js, config)
    existing = await _existing_keys(kvs)
    busy = {short: len(keys) for short, keys in existing.items() if keys}
    if busy and not force:
        shown = ", ".join(f"{short} ({n} keys)" for short, n in sorted(busy.items()))
        raise SnapshotError(f"cluster {subjects.prefix!r} is not empty: {shown}; use force")
    written: dict[str, int] = {}
    for short, keys in values.items():
        written[short] = 0
        for key, value in keys.items():
            if short == "state" and key == EPOCH_KEY:
                continue  # written below, bumped
            await kvs[short].put(key, value)
            written[short] += 1
    kept = sum(len(existing[s] - set(values.get(s, {}))) for s in existing)
    epoch = await _bump_epoch(kvs["state"], snapshot_epoch)
    return ImportResult(written=written, kept=kept, epoch=epoch)


async def _bump_epoch(kv: KeyValue, floor: int, attempts: int = 5) -> int:
    for _ in range(attempts):
        current = await read(kv, EPOCH_KEY, EpochRecord)
        epoch = max(floor, current[0].epoch if current else 0) + 1
        record = encode(EpochRecord(epoch=epoch, created_at=time.time()))
        try:
            if current is None:
                await kv.create(EPOCH_KEY, record)
            else:
                await kv.update(EPOCH_KEY, record, last=current[1])
        except KeyWrongLastSequenceError:
            continue
        return epoch
    raise SnapshotError("epoch: too many concurrent updates")


# -- the state manager's API (``P.api.state_manager.get|list|epoch``) -----------------


class StateKey(msgspec.Struct, frozen=True, kw_only=True):
    """Names one key of one bucket (by short name) for ``get``."""

    bucket: str
    key: str


class StateValue(msgspec.Struct, frozen=True, kw_only=True):
    """A key's latest value: decoded JSON, or base64 text when ``encoding`` is base64."""

    bucket: str
    key: str
    revision: int
    value: Any = None
    encoding: str = "json"


class StateQuery(msgspec.Struct, frozen=True, kw_only=True):
    """Keys of one bucket starting with ``prefix``, for ``list``."""

    bucket: str
    prefix: str = ""
    limit: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 10_000


class StateKeys(msgspec.Struct, frozen=True, kw_only=True):
    """Sorted keys (at most ``limit``) and how many matched in all."""

    bucket: str
    keys: list[str]
    total: int
