"""The object store's wire layout, moved fast: pipelined chunk publishes, batched reads.

nats-py's ``ObjectStore`` awaits one JetStream ack per chunk on put and reads through
an ordered push consumer on get. This module speaks the same layout (so ``nats``
tooling and nats-py read what it writes, and the other way round) at several times
the speed:

- chunks go to ``$O.<bucket>.C.<nuid>`` in ``OBJ_<bucket>``; the meta message is the
  JSON of nats-py's ``ObjectInfo`` on ``$O.<bucket>.M.<base64url name>`` with a
  subject rollup header, its digest ``SHA-256=<base64url>``;
- a put keeps up to ``inflight`` chunk publishes unacknowledged (``publish_async``),
  while a worker thread reads and hashes the next segment of the file;
- a read pulls chunks in batches and hands each batch to a worker thread, which
  hashes it and writes it out while the next batch is on the wire.

hashlib and file I/O release the GIL, so those threads overlap the event loop.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import BinaryIO

import anyio
import anyio.to_thread
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    ObjectInfo,
    ObjectMetaOptions,
    PubAck,
)
from nats.js.client import JetStreamContext
from nats.js.kv import MSG_ROLLUP_SUBJECT

from shared.errors import RingmasterError

#: Bytes per chunk: one publish each; well below the server's default max_payload (1 MiB).
STORE_CHUNK = 512 * 1024
#: Chunk publishes in flight before the oldest ack is awaited.
INFLIGHT = 32
#: Chunks read from the file (and hashed) per worker-thread call on put.
SEGMENT_CHUNKS = 8
#: Chunks asked for in one pull on read.
FETCH_CHUNKS = 16
DIGEST_PREFIX = "SHA-256="


class WireError(RingmasterError):
    """Chunks or acks did not arrive as the object's layout says they must."""


@dataclass(frozen=True)
class Sent:
    """What a chunk upload produced: everything the meta message needs."""

    nuid: str
    sha256: str
    size: int
    chunks: int


def chunk_subject(bucket: str, nuid: str) -> str:
    """Where an object's chunks are published."""
    return f"$O.{bucket}.C.{nuid}"


def meta_subject(bucket: str, name: str) -> str:
    """Where an object's meta message lives (name base64url-encoded, as nats-py does)."""
    return f"$O.{bucket}.M.{base64.urlsafe_b64encode(name.encode()).decode()}"


def digest_of(sha256_hex: str) -> str:
    """The object store's digest string of a hex sha256."""
    return DIGEST_PREFIX + base64.urlsafe_b64encode(bytes.fromhex(sha256_hex)).decode()


def meta_info(bucket: str, name: str, sent: Sent, chunk_size: int = STORE_CHUNK) -> ObjectInfo:
    """The ObjectInfo nats-py's own put would write for these chunks."""
    return ObjectInfo(
        name=name,
        bucket=bucket,
        nuid=sent.nuid,
        size=sent.size,
        chunks=sent.chunks,
        digest=digest_of(sent.sha256),
        mtime=datetime.now(UTC).isoformat(),
        options=ObjectMetaOptions(max_chunk_size=chunk_size),
    )


async def write_meta(
    js: JetStreamContext,
    info: ObjectInfo,
    timeout: float = 10.0,
    headers: dict[str, str] | None = None,
) -> None:
    """Publish the meta message (rolling up earlier ones of the name), acknowledged."""
    body = json.dumps(info.as_dict()).encode()
    sent = {**(headers or {}), "Nats-Rollup": MSG_ROLLUP_SUBJECT}
    await js.publish(meta_subject(info.bucket, info.name), body, timeout=timeout, headers=sent)


async def publish_chunks(
    js: JetStreamContext,
    bucket: str,
    nuid: str,
    fh: BinaryIO,
    *,
    chunk_size: int = STORE_CHUNK,
    inflight: int = INFLIGHT,
    timeout: float = 10.0,
) -> Sent:
    """Publish ``fh``'s bytes as chunks of ``nuid``, acks pipelined; all acked on return."""
    subject = chunk_subject(bucket, nuid)
    digest = hashlib.sha256()
    pending: deque[asyncio.Future[PubAck]] = deque()
    counted = [0, 0]  # bytes, chunks
    send, receive = anyio.create_memory_object_stream[bytes](1)

    def read() -> bytes:
        data = fh.read(chunk_size * SEGMENT_CHUNKS)
        digest.update(data)
        return data

    async def produce() -> None:
        # One segment read ahead: the worker thread reads and hashes the next segment
        # while the event loop publishes this one.
        async with send:
            while data := await anyio.to_thread.run_sync(read):
                await send.send(data)

    async def publish() -> None:
        async with receive:
            async for segment in receive:
                view = memoryview(segment)
                for start in range(0, len(view), chunk_size):
                    piece = view[start : start + chunk_size]
                    pending.append(await js.publish_async(subject, bytes(piece)))
                    counted[0] += len(piece)
                    counted[1] += 1
                    while len(pending) > inflight:
                        await _acked(pending.popleft(), timeout)
        while pending:
            await _acked(pending.popleft(), timeout)

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(produce)
            tg.start_soon(publish)
    except BaseExceptionGroup as group:
        raise _sole(group) from None
    finally:
        for future in pending:  # cancelled ones give their slot back to nats-py
            future.cancel()
    return Sent(nuid=nuid, sha256=digest.hexdigest(), size=counted[0], chunks=counted[1])


async def _acked(future: asyncio.Future[PubAck], timeout: float) -> None:
    """Wait for one chunk's ack; no ack in time is an error (a denied publish gets none)."""
    with anyio.move_on_after(timeout):
        await future
        return
    raise WireError(f"no JetStream ack for a chunk within {timeout:g} s")


async def read_chunks(
    js: JetStreamContext,
    bucket: str,
    nuid: str,
    *,
    chunks: int,
    sink: Callable[[list[bytes]], None],
    timeout: float = 10.0,
    exact: bool = False,
) -> None:
    """Pull an object's ``chunks`` chunks in batches, each handed to ``sink`` in a thread.

    ``sink`` runs in a worker thread while the next batch is pulled, so hashing and
    writing overlap the transfer. With ``exact``, a chunk subject holding more
    messages than ``chunks`` is an error (a reader that reads to the end, as nats-py
    does, would see different bytes).
    """
    config = ConsumerConfig(
        ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL, inactive_threshold=30
    )
    sub = await js.pull_subscribe(
        chunk_subject(bucket, nuid), stream=f"OBJ_{bucket}", config=config
    )
    send, receive = anyio.create_memory_object_stream[list[bytes]](2)

    async def drain() -> None:
        async with receive:
            async for batch in receive:
                await anyio.to_thread.run_sync(sink, batch)

    async def pull() -> None:
        got = 0
        async with send:
            while got < chunks:
                msgs = await sub.fetch(min(FETCH_CHUNKS, chunks - got), timeout=timeout)
                got += len(msgs)
                if exact and got == chunks and msgs[-1].metadata.num_pending:
                    raise WireError(f"{nuid}: more than the {chunks} chunks the meta names")
                await send.send([m.data for m in msgs])

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(drain)
            tg.start_soon(pull)
    except BaseExceptionGroup as group:
        # Callers catch the error itself (a failed fetch, a bad chunk), not a group.
        raise _sole(group) from None
    finally:
        await sub.unsubscribe()


def _sole(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first error of a task group that is not a cancellation."""
    found: BaseException = group
    while isinstance(found, BaseExceptionGroup):
        real = [e for e in found.exceptions if not isinstance(e, anyio.get_cancelled_exc_class())]
        found = (real or list(found.exceptions))[0]
    return found
