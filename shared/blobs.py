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
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import BinaryIO

import anyio.to_thread
from nats.js.api import ObjectStoreConfig, StorageType
from nats.js.client import JetStreamContext
from nats.js.errors import BucketNotFoundError, NotFoundError, ObjectNotFoundError
from nats.js.object_store import OBJ_STREAM_TEMPLATE, ObjectStore
from nats.nuid import NUID

from shared.blob_seal import SealReply, SealRequest
from shared.blob_wire import (
    STORE_CHUNK,
    Sent,
    chunk_subject,
    meta_info,
    publish_chunks,
    read_chunks,
    write_meta,
)
from shared.errors import RingmasterError
from shared.jobs import DataRef

log = logging.getLogger("ringmaster.blobs")

CHUNK = 1 << 20

#: Names uploaded chunks through a trusted writer (the sync planner's ``seal``).
Sealer = Callable[[SealRequest], Awaitable[SealReply]]


class BlobError(RingmasterError):
    """A blob is missing or its bytes do not match its sha256."""


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class DataStore(ObjectStore):
    """An object store that says which JetStream context, bucket and stream it is on
    (nats-py's keeps them private): what :class:`BlobStore`'s own chunk protocol needs."""

    def __init__(self, js: JetStreamContext, bucket: str) -> None:
        self.js = js
        self.bucket = bucket
        self.stream = OBJ_STREAM_TEMPLATE.format(bucket=bucket)
        super().__init__(name=bucket, stream=self.stream, js=js)


async def ensure_store(js: JetStreamContext, name: str, *, replicas: int = 1) -> DataStore:
    """Open the object store, creating it when missing."""
    try:
        await js.object_store(name)  # the store must exist: this says so, or raises
    except (BucketNotFoundError, NotFoundError):
        await js.create_object_store(
            name, ObjectStoreConfig(bucket=name, storage=StorageType.FILE, replicas=replicas)
        )
        log.info("created object store %s", name)
    return DataStore(js, name)


class BlobStore:
    """Put and get blobs by sha256, with a local cache directory checked by hash.

    Without a ``sealer`` a put writes the meta message itself (managers, the CLI);
    ``purge`` says this client may remove the chunks of a duplicate upload. With a
    sealer, chunks go under ``namespace`` (``$O.<bucket>.C.<namespace>.<nuid>``, the
    only chunk subjects a per-node user may publish) and the sealer names them.
    """

    def __init__(
        self,
        store: DataStore,
        cache_dir: Path | None = None,
        *,
        sealer: Sealer | None = None,
        namespace: str = "",
        purge: bool = False,
    ) -> None:
        self._store = store
        self._js = store.js  # the context the store was opened with
        self._bucket = store.bucket
        self._cache = cache_dir
        self._sealer = sealer
        self._namespace = namespace
        self._purge = purge
        self._warned = False
        self._nuid = NUID()
        #: Puts by outcome: stored, sealed, duplicates, duplicate_chunks_left.
        self.counts: Counter[str] = Counter()
        if cache_dir is not None:
            cache_dir.mkdir(parents=True, exist_ok=True)

    async def put_bytes(self, name: str, data: bytes) -> DataRef:
        """Store ``data``; returns its reference (stored once per distinct content)."""
        sent = await self._put(io.BytesIO(data))
        return DataRef(name=name, sha256=sent.sha256, size=sent.size)

    async def put_file(self, path: Path, name: str | None = None) -> DataRef:
        """Store a file's content; returns its reference."""
        fh = await anyio.to_thread.run_sync(path.open, "rb")
        try:
            sent = await self._put(fh)
        finally:
            await anyio.to_thread.run_sync(fh.close)
        return DataRef(name=name or path.name, sha256=sent.sha256, size=sent.size)

    async def _put(self, fh: BinaryIO) -> Sent:
        """Upload and hash in one pass, then name the chunks by their sha256.

        The name is known only at the end, so content already stored is uploaded
        again; a second pass to hash first would cost more on every put than the
        rare duplicate does. A duplicate's chunks are removed by the sync planner
        (sealed uploads) or here when this client may purge; otherwise counted.
        """
        nuid = self._nuid.next().decode()
        if self._namespace:
            nuid = f"{self._namespace}.{nuid}"
        sent = await publish_chunks(self._js, self._bucket, nuid, fh)
        if self._sealer is not None:
            reply = await self._sealer(_seal_request(sent))
            self.counts["sealed" if reply.sealed else "duplicates"] += 1
        elif await self.exists(sent.sha256):
            await self._drop_duplicate(sent)
        else:
            await write_meta(self._js, meta_info(self._bucket, sent.sha256, sent))
            self.counts["stored"] += 1
        return sent

    async def _drop_duplicate(self, sent: Sent) -> None:
        """Remove this upload's chunks (the name already holds the same content)."""
        self.counts["duplicates"] += 1
        if not self._purge:
            self.counts["duplicate_chunks_left"] += sent.chunks
            if not self._warned:
                self._warned = True
                log.warning("duplicate upload %s: chunks left in the store", sent.sha256[:12])
            return
        await self._js.purge_stream(
            self._store.stream, subject=chunk_subject(self._bucket, sent.nuid)
        )

    async def exists(self, sha256: str) -> bool:
        """True when a blob with this hash is stored."""
        try:
            info = await self._store.get_info(sha256)
        except (ObjectNotFoundError, NotFoundError):
            return False
        return not info.deleted

    async def _read(self, ref: DataRef, out: BinaryIO) -> None:
        """Write the blob's bytes to ``out``, checking size and sha256 on the way."""
        try:
            info = await self._store.get_info(ref.sha256)
        except (ObjectNotFoundError, NotFoundError) as exc:
            raise BlobError(f"blob {ref.name} ({ref.sha256[:12]}) is missing") from exc
        digest = hashlib.sha256()

        def sink(batch: list[bytes]) -> None:  # in a worker thread: both release the GIL
            for data in batch:
                digest.update(data)
                out.write(data)

        if info.size:
            await read_chunks(self._js, self._bucket, info.nuid, chunks=info.chunks or 0, sink=sink)
        got = digest.hexdigest()
        if got != ref.sha256:
            raise BlobError(f"blob {ref.name}: sha256 {got[:12]} does not match {ref.sha256[:12]}")

    async def get_bytes(self, ref: DataRef) -> bytes:
        """The blob's bytes, verified against ``ref.sha256``."""
        buffer = io.BytesIO()
        await self._read(ref, buffer)
        return buffer.getvalue()

    async def fetch(self, ref: DataRef, dest: Path) -> Path:
        """Write the verified blob to ``dest``, through the cache when there is one."""
        cached = self._cache / ref.sha256 if self._cache is not None else None
        if cached is not None and await anyio.to_thread.run_sync(_valid, cached, ref.sha256):
            await anyio.to_thread.run_sync(_place, cached, dest)
            return dest
        target = cached if cached is not None else dest
        await anyio.to_thread.run_sync(lambda: dest.parent.mkdir(parents=True, exist_ok=True))
        part = target.with_name(target.name + ".part")
        fh = await anyio.to_thread.run_sync(part.open, "wb")
        try:
            # Straight to the file: no whole-blob buffer; renamed only once verified.
            await self._read(ref, fh)
        except BaseException:
            await anyio.to_thread.run_sync(_discard, fh, part)
            raise
        await anyio.to_thread.run_sync(fh.close)
        await anyio.to_thread.run_sync(os.replace, part, target)
        if cached is not None:
            await anyio.to_thread.run_sync(_place, cached, dest)
        return dest


def _seal_request(sent: Sent) -> SealRequest:
    """Ask for the chunks of ``sent`` to be named by their sha256."""
    return SealRequest(
        name=sent.sha256,
        sha256=sent.sha256,
        size=sent.size,
        nuid=sent.nuid,
        chunks=sent.chunks,
        chunk_size=STORE_CHUNK,
    )


def _valid(path: Path, sha256: str) -> bool:
    return path.exists() and sha256_file(path) == sha256


def _discard(fh: BinaryIO, part: Path) -> None:
    """Close and remove a partial download (a failed or unverified fetch)."""
    fh.close()
    part.unlink(missing_ok=True)


def _place(cached: Path, dest: Path) -> None:
    """Link (or copy) a verified cache file to ``dest``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        dest.unlink()
    try:
        os.link(cached, dest)  # cheap when cache and job dir share a filesystem
    except OSError:
        shutil.copyfile(cached, dest)
