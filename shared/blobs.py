"""Content-addressed blobs in the object store ``P_data``.

A blob's object name is its sha256, so the same bytes are stored once and a reader
can check what it got: every read is verified against the hash it asked for, and a
mismatch is an error, never silently used. Nothing here deletes; retention is one
service's duty and never touches referenced data.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import shutil
from pathlib import Path

import anyio.to_thread
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    ObjectInfo,
    ObjectMeta,
    ObjectMetaOptions,
    ObjectStoreConfig,
    StorageType,
)
from nats.js.client import JetStreamContext
from nats.js.errors import BucketNotFoundError, NotFoundError, ObjectNotFoundError
from nats.js.object_store import ObjectStore

from shared.errors import RingmasterError
from shared.jobs import DataRef

log = logging.getLogger("ringmaster.blobs")

CHUNK = 1 << 20
#: Object-store chunk size: each chunk is one publish awaited for its ack, so fewer,
#: larger chunks move more bytes per round trip (nats-py's default is 128 KiB). It
#: stays well below the server's default max_payload of 1 MiB.
STORE_CHUNK = 512 * 1024
#: Chunks asked for in one pull when reading a blob.
FETCH_CHUNKS = 64


class BlobError(RingmasterError):
    """A blob is missing or its bytes do not match its sha256."""


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


async def ensure_store(js: JetStreamContext, name: str, *, replicas: int = 1) -> ObjectStore:
    """Open the object store, creating it when missing."""
    try:
        return await js.object_store(name)
    except (BucketNotFoundError, NotFoundError):
        store = await js.create_object_store(
            name, ObjectStoreConfig(bucket=name, storage=StorageType.FILE, replicas=replicas)
        )
        log.info("created object store %s", name)
        return store


class BlobStore:
    """Put and get blobs by sha256, with a local cache directory checked by hash."""

    def __init__(self, store: ObjectStore, cache_dir: Path | None = None) -> None:
        self._store = store
        self._cache = cache_dir
        if cache_dir is not None:
            cache_dir.mkdir(parents=True, exist_ok=True)

    async def put_bytes(self, name: str, data: bytes) -> DataRef:
        """Store ``data``; returns its reference (stored once per distinct content)."""
        sha = hashlib.sha256(data).hexdigest()
        if not await self.exists(sha):
            await self._put(sha, data)
        return DataRef(name=name, sha256=sha, size=len(data))

    async def _put(self, sha256: str, data: bytes) -> None:
        options = ObjectMetaOptions(max_chunk_size=STORE_CHUNK)
        await self._store.put(sha256, data, meta=ObjectMeta(name=sha256, options=options))

    async def put_file(self, path: Path, name: str | None = None) -> DataRef:
        """Store a file's content; returns its reference."""
        # Hashing a large file would block the event loop: do it in a worker thread.
        sha, size = await anyio.to_thread.run_sync(_hash_and_size, path)
        if not await self.exists(sha):
            data = await anyio.to_thread.run_sync(path.read_bytes)
            await self._put(sha, data)
        return DataRef(name=name or path.name, sha256=sha, size=size)

    async def exists(self, sha256: str) -> bool:
        """True when a blob with this hash is stored."""
        try:
            info = await self._store.get_info(sha256)
        except (ObjectNotFoundError, NotFoundError):
            return False
        return not info.deleted

    async def get_bytes(self, ref: DataRef) -> bytes:
        """The blob's bytes, verified against ``ref.sha256``."""
        try:
            info = await self._store.get_info(ref.sha256)
        except (ObjectNotFoundError, NotFoundError) as exc:
            raise BlobError(f"blob {ref.name} ({ref.sha256[:12]}) is missing") from exc
        data = await self._read_chunks(info) if info.size else b""
        got = hashlib.sha256(data).hexdigest()
        if got != ref.sha256:
            raise BlobError(f"blob {ref.name}: sha256 {got[:12]} does not match {ref.sha256[:12]}")
        return data

    async def _read_chunks(self, info: ObjectInfo) -> bytes:
        """The object's chunks, pulled in batches from the store's stream.

        nats-py's ``get`` reads through an ordered push consumer whose flow control
        stalls it (about 35 MB/s here, and quadratic without ``writeinto``); a pull
        consumer fetching batches of chunks is several times faster. The chunks'
        subject and stream are the object store's layout (``$O.<bucket>.C.<nuid>`` in
        ``OBJ_<bucket>``).
        """
        js = self._store._js  # the context the store was opened with
        subject = f"$O.{info.bucket}.C.{info.nuid}"
        config = ConsumerConfig(
            ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL, inactive_threshold=30
        )
        sub = await js.pull_subscribe(subject, stream=f"OBJ_{info.bucket}", config=config)
        buffer = io.BytesIO()
        got, chunks = 0, info.chunks or 0
        try:
            while got < chunks:
                msgs = await sub.fetch(min(FETCH_CHUNKS, chunks - got), timeout=10)
                for msg in msgs:
                    buffer.write(msg.data)
                got += len(msgs)
        finally:
            await sub.unsubscribe()
        return buffer.getvalue()

    async def fetch(self, ref: DataRef, dest: Path) -> Path:
        """Write the verified blob to ``dest``, through the cache when there is one."""
        cached = self._cache / ref.sha256 if self._cache is not None else None
        if cached is not None and await anyio.to_thread.run_sync(_valid, cached, ref.sha256):
            await anyio.to_thread.run_sync(_place, cached, dest, None)
        else:
            data = await self.get_bytes(ref)
            await anyio.to_thread.run_sync(_place, cached, dest, data)
        return dest


def _hash_and_size(path: Path) -> tuple[str, int]:
    return sha256_file(path), path.stat().st_size


def _valid(path: Path, sha256: str) -> bool:
    return path.exists() and sha256_file(path) == sha256


def _place(cached: Path | None, dest: Path, data: bytes | None) -> None:
    """Write ``data`` (already verified) to the cache, then link or copy it to ``dest``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if cached is None:
        dest.write_bytes(data or b"")
        return
    if data is not None:
        tmp = cached.with_suffix(".part")
        tmp.write_bytes(data)
        os.replace(tmp, cached)
    if dest.exists():
        dest.unlink()
    try:
        os.link(cached, dest)  # cheap when cache and job dir share a filesystem
    except OSError:
        shutil.copyfile(cached, dest)
