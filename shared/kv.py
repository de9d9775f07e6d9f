"""KV buckets: provisioning, scans, typed compare-and-set updates, single-writer leases.

Every change to a record is a compare-and-set on its revision, so two writers can
never silently overwrite each other. A lease (for duties that must have one owner)
is a key taken with ``create`` and renewed with ``update(last=revision)``; the
revision it holds is its fencing token.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

import msgspec
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import KeyValueConfig, StorageType
from nats.js.client import JetStreamContext
from nats.js.errors import (
    BucketNotFoundError,
    KeyDeletedError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
)
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from shared.codec import decode, encode
from shared.errors import Conflict

log = logging.getLogger("ringmaster.kv")

T = TypeVar("T")

#: Seconds the server keeps a one-shot scan's watch consumer after the scan stopped it.
#: nats-py keeps it 5 minutes by default and stop() does not delete it, so a burst of
#: scans (a ``list`` per request) piled up consumers until the server refused new ones.
SCAN_INACTIVE_S = 2.0


async def ensure_bucket(js: JetStreamContext, config: KeyValueConfig) -> KeyValue:
    """Open the bucket, creating it when missing (idempotent across services)."""
    try:
        return await js.key_value(config.bucket)
    except BucketNotFoundError:
        kv = await js.create_key_value(config)
        log.info("created KV bucket %s", config.bucket)
        return kv


def bucket_config(
    name: str, *, history: int = 1, ttl: float | None = None, replicas: int = 1
) -> KeyValueConfig:
    """A file-backed bucket's config."""
    # Direct gets: a read is served by any replica without a JetStream API request.
    return KeyValueConfig(
        bucket=name,
        history=history,
        ttl=ttl,
        replicas=replicas,
        storage=StorageType.FILE,
        direct=True,
    )


async def read(kv: KeyValue, key: str, tp: type[T]) -> tuple[T, int] | None:
    """The record at ``key`` and its revision, or None when there is none."""
    try:
        entry = await kv.get(key)
    except (KeyNotFoundError, KeyDeletedError):
        return None
    if not entry.value:
        return None
    return decode(tp, entry.value), entry.revision or 0


async def read_all(
    kv: KeyValue, pattern: str = ">", timeout: float = 5.0, *, meta_only: bool = False
) -> dict[str, tuple[bytes, int]]:
    """Every live key of ``kv`` matching the subject ``pattern`` (``"model.>"``), with its
    latest value and revision; deleted keys are left out. The one scan of a bucket.

    The scan watches the whole bucket and ends when the message that was last in the
    bucket's stream when it began has arrived. nats-py's own end-of-values marker can
    come before values it should follow (it compares a consumer-info reply with
    deliveries racing it), which made scans come back short under load; the marker is
    only a fallback, when that last message can no longer arrive (it expired in
    between). The pattern is applied here, not by the server, so that one rule holds
    for every scan: a filtered watch would never see the last message of the stream.
    (nats-py's ``kv.keys(filters=...)`` takes its filters as substrings of each key,
    not as subject patterns.)

    The watch consumer lapses ``SCAN_INACTIVE_S`` after the scan (see there).
    ``meta_only`` leaves the values out (every value is then ``b""``): a key listing.
    TimeoutError when nothing arrives for ``timeout`` seconds before the scan ended.
    """
    state = (await kv.status()).stream_info.state
    if not state.messages:
        return {}
    last = state.last_seq
    watcher = await kv.watchall(inactive_threshold=SCAN_INACTIVE_S, meta_only=meta_only)
    entries: dict[str, tuple[bytes, int]] = {}
    match = _matcher(pattern)
    marker = False
    try:
        while True:
            try:
                entry = await watcher.updates(timeout)  # type: ignore[no-untyped-call]
            except NatsTimeoutError:
                if marker:  # the last message is gone; everything else has come
                    return entries
                raise
            if entry is None:
                marker = True
                continue
            if entry.operation in (KV_DEL, KV_PURGE):
                entries.pop(entry.key, None)
            elif match(entry.key):
                entries[entry.key] = (entry.value or b"", entry.revision or 0)
            if (entry.revision or 0) >= last:
                return entries
    finally:
        await watcher.stop()  # type: ignore[no-untyped-call]


async def keys_matching(kv: KeyValue, pattern: str = ">", timeout: float = 5.0) -> list[str]:
    """Keys of ``kv`` matching the subject ``pattern``, sorted; [] when none (see
    ``read_all``, whose scan this is, values left out)."""
    return sorted(await read_all(kv, pattern, timeout, meta_only=True))


def _matcher(pattern: str) -> Callable[[str], bool]:
    """Whether a key matches the NATS subject ``pattern`` (``*`` one token, ``>`` the rest)."""
    if pattern == ">":
        return lambda _: True
    want = pattern.split(".")

    def match(key: str) -> bool:
        tokens = key.split(".")
        for i, token in enumerate(want):
            if token == ">":
                return len(tokens) > i
            if i >= len(tokens) or (token != "*" and token != tokens[i]):
                return False
        return len(tokens) == len(want)

    return match


async def cas_update(
    kv: KeyValue,
    key: str,
    tp: type[T],
    change: Callable[[T], T | None],
    *,
    attempts: int = 5,
    known: tuple[T, int] | None = None,
) -> tuple[T, int] | None:
    """Apply ``change`` to the current record with compare-and-set, retrying on races.

    ``change`` returns the new record, or None to leave it as it is. Returns the record
    written and its new revision; None when the key is missing or nothing changed.

    ``known`` is a (record, revision) the caller already holds (an index, a read just
    made): the first try writes on it without reading. Only a successful write proves
    it was current, so when the write loses the race, or ``change`` declines or raises
    on it (it may be stale), the decision is taken again on a fresh read.
    """
    if known is not None:
        written = await _try_known(kv, key, change, known)
        if written is not None:
            return written
    for _ in range(attempts):
        current = await read(kv, key, tp)
        if current is None:
            return None
        value, revision = current
        new = change(value)
        if new is None:
            return None
        try:
            new_revision = await kv.update(key, encode(new), last=revision)
        except KeyWrongLastSequenceError:
            continue
        return new, new_revision
    raise Conflict(f"{key}: too many concurrent updates")


async def _try_known(
    kv: KeyValue, key: str, change: Callable[[T], T | None], known: tuple[T, int]
) -> tuple[T, int] | None:
    """One compare-and-set on a record the caller holds; None when a fresh read must decide."""
    value, revision = known
    try:
        new = change(value)
    except Exception:  # noqa: BLE001 - a refusal on a stale copy is retried on a fresh read
        return None
    if new is None:
        return None
    try:
        return new, await kv.update(key, encode(new), last=revision)
    except KeyWrongLastSequenceError:
        return None


class LeaseRecord(msgspec.Struct, frozen=True):
    """Who holds a lease and until when (wall clock, for display only)."""

    holder: str
    expires_at: float


class Lease:
    """A single-writer duty held in a KV bucket, renewed by compare-and-set."""

    def __init__(self, kv: KeyValue, key: str, holder: str, ttl_s: float) -> None:
        self._kv = kv
        self.key = key
        self.holder = holder
        self.ttl_s = ttl_s
        self.revision: int | None = None
        self._renewed_at = 0.0

    @property
    def held(self) -> bool:
        """True while we hold it and our last renewal is within the ttl."""
        return self.revision is not None and time.monotonic() - self._renewed_at < self.ttl_s

    async def acquire_or_renew(self) -> bool:
        """Take the lease if free or lapsed, or renew it if ours; True when held."""
        record = encode(LeaseRecord(self.holder, time.time() + self.ttl_s))
        try:
            if self.revision is not None:
                self.revision = await self._kv.update(self.key, record, last=self.revision)
            else:
                current = await read(self._kv, self.key, LeaseRecord)
                if current is None:
                    self.revision = await self._kv.create(self.key, record)
                elif current[0].holder == self.holder or current[0].expires_at < time.time():
                    self.revision = await self._kv.update(self.key, record, last=current[1])
                else:
                    return False
        except (KeyWrongLastSequenceError, msgspec.ValidationError) as exc:
            log.info("lease %s lost or contended: %s", self.key, exc)
            self.revision = None
            return False
        self._renewed_at = time.monotonic()
        return True
