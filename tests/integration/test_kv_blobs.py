"""KV compare-and-set, leases, blobs and provisioning against a real server."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import anyio
import msgspec
import pytest
from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig

from shared.blob_wire import STORE_CHUNK, digest_of
from shared.blobs import BlobError, BlobStore, ensure_store
from shared.config import BaseConfig, convert_config
from shared.jobs import DataRef
from shared.kv import Lease, bucket_config, cas_update, ensure_bucket, read, read_all
from shared.provision import BUCKET_SPECS, ensure_stream, jobs_stream_config, provision_all
from shared.subjects import Subjects

pytestmark = pytest.mark.anyio


class Counter(msgspec.Struct, frozen=True):
    """A record that concurrent writers increment."""

    n: int


async def test_cas_update_never_loses_a_concurrent_increment(nc: Client, prefix: str) -> None:
    kv = await ensure_bucket(nc.jetstream(), bucket_config(f"{prefix}_cas"))
    await kv.create("c", msgspec.json.encode(Counter(0)))

    async def bump() -> None:
        await cas_update(kv, "c", Counter, lambda c: Counter(c.n + 1), attempts=50)

    async with anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(bump)
    value = await read(kv, "c", Counter)
    assert value is not None and value[0] == Counter(20)
    assert await cas_update(kv, "missing", Counter, lambda c: c) is None


async def test_cas_update_on_a_known_record_writes_without_reading_and_survives_staleness(
    nc: Client, prefix: str
) -> None:
    kv = await ensure_bucket(nc.jetstream(), bucket_config(f"{prefix}_known"))
    rev = await kv.create("c", msgspec.json.encode(Counter(0)))
    seen: list[int] = []

    def bump(c: Counter) -> Counter:
        seen.append(c.n)
        return Counter(c.n + 1)

    # Current copy: written on it directly, change applied once.
    written = await cas_update(kv, "c", Counter, bump, known=(Counter(0), rev))
    assert written is not None and written[0] == Counter(1) and seen == [0]
    # Stale copy (revision and value behind): the write loses, a fresh read decides.
    seen.clear()
    written = await cas_update(kv, "c", Counter, bump, known=(Counter(0), rev))
    assert written is not None and written[0] == Counter(2) and seen == [0, 1]

    # A refusal judged on a stale copy is judged again on the current record.
    def only_from_two(c: Counter) -> Counter | None:
        if c.n != 2:
            raise ValueError(f"refused at {c.n}")
        return Counter(3)

    written = await cas_update(kv, "c", Counter, only_from_two, known=(Counter(0), rev))
    assert written is not None and written[0] == Counter(3)
    # ... and still raised when the current record refuses too.
    with pytest.raises(ValueError, match="refused at 3"):
        await cas_update(kv, "c", Counter, only_from_two, known=(Counter(1), rev))
    # "No change" on a stale copy is not trusted either.
    written = await cas_update(
        kv, "c", Counter, lambda c: Counter(9) if c.n == 3 else None, known=(Counter(0), rev)
    )
    assert written is not None and written[0] == Counter(9)
    final = await read(kv, "c", Counter)
    assert final is not None and final[0] == Counter(9)


async def test_read_all_sees_every_live_key_on_every_scan(nc: Client, prefix: str) -> None:
    kv = await ensure_bucket(nc.jetstream(), bucket_config(f"{prefix}_scan", history=2))
    assert await read_all(kv) == {}
    for i in range(60):
        await kv.put(f"k{i}", str(i).encode())
    for i in range(0, 60, 3):
        await kv.delete(f"k{i}")
    await kv.put("k1", b"again")
    expected = {f"k{i}" for i in range(60) if i % 3}
    # Scans in parallel, as services at start do: every one must see the whole bucket.
    results: list[dict[str, tuple[bytes, int]]] = []

    async def scan() -> None:
        results.append(await read_all(kv))

    async with anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(scan)
    assert len(results) == 20
    for found in results:
        assert set(found) == expected
        assert found["k1"][0] == b"again"
    await kv.delete("k1")  # the stream's last message is now a delete marker
    assert set(await read_all(kv)) == expected - {"k1"}


async def test_lease_has_one_holder_and_passes_on_when_it_lapses(nc: Client, prefix: str) -> None:
    kv = await ensure_bucket(nc.jetstream(), bucket_config(f"{prefix}_leases"))
    first = Lease(kv, "duty", "a", ttl_s=0.3)
    second = Lease(kv, "duty", "b", ttl_s=0.3)
    assert await first.acquire_or_renew()
    assert not await second.acquire_or_renew()
    assert await first.acquire_or_renew()  # renewal by the holder
    await anyio.sleep(0.4)  # the holder stops renewing: its record expires
    assert await second.acquire_or_renew()
    assert not await first.acquire_or_renew()  # its revision is stale: fenced off
    assert not first.held and second.held


async def test_blobs_are_content_addressed_and_verified(
    nc: Client, prefix: str, tmp_path: Path
) -> None:
    store = await ensure_store(nc.jetstream(), f"{prefix}_data")
    blobs = BlobStore(store, cache_dir=tmp_path / "cache")
    ref = await blobs.put_bytes("games.bin", b"x" * 1000)
    assert ref.sha256 == hashlib.sha256(b"x" * 1000).hexdigest()
    assert (await blobs.put_bytes("again.bin", b"x" * 1000)).sha256 == ref.sha256
    out = await blobs.fetch(ref, tmp_path / "job" / "games.bin")
    assert out.read_bytes() == b"x" * 1000
    source = tmp_path / "model.npz"
    source.write_bytes(b"model-bytes")
    file_ref = await blobs.put_file(source)
    assert await blobs.get_bytes(file_ref) == b"model-bytes"
    # Bytes stored under a name that is not their hash are refused on read.
    fake = hashlib.sha256(b"what was promised").hexdigest()
    await store.put(fake, b"something else")
    with pytest.raises(BlobError, match="does not match"):
        await blobs.get_bytes(DataRef(name="bad", sha256=fake, size=17))
    with pytest.raises(BlobError, match="missing"):
        await blobs.get_bytes(DataRef(name="gone", sha256="0" * 64, size=1))


@pytest.mark.parametrize("size", [0, 1, STORE_CHUNK, 3 * STORE_CHUNK + 17])
async def test_blobs_keep_the_object_store_wire_format_both_ways(
    nc: Client, prefix: str, tmp_path: Path, size: int
) -> None:
    """nats-py's own ObjectStore reads what BlobStore writes, and the other way round."""
    store = await ensure_store(nc.jetstream(), f"{prefix}_data")
    blobs = BlobStore(store)
    data = os.urandom(size)
    source = tmp_path / "blob.bin"
    source.write_bytes(data)
    ref = await blobs.put_file(source)
    got = await store.get(ref.sha256)  # nats-py checks the digest header itself
    assert got.data == data
    assert got.info.size == size and got.info.chunks == -(-size // STORE_CHUNK)
    assert got.info.digest == digest_of(ref.sha256)
    theirs = os.urandom(size)
    name = hashlib.sha256(theirs).hexdigest()
    await store.put(name, theirs)
    their_ref = DataRef(name="theirs", sha256=name, size=size)
    assert await blobs.get_bytes(their_ref) == theirs
    out = await blobs.fetch(their_ref, tmp_path / "job" / "theirs.bin")
    assert out.read_bytes() == theirs


async def test_a_duplicate_put_leaves_one_copy_and_counts_it(nc: Client, prefix: str) -> None:
    store = await ensure_store(nc.jetstream(), f"{prefix}_data")
    data = os.urandom(2 * STORE_CHUNK)
    first = await BlobStore(store).put_bytes("a", data)
    keeper = BlobStore(store, purge=True)
    assert (await keeper.put_bytes("b", data)).sha256 == first.sha256
    assert keeper.counts == {"duplicates": 1}
    leaver = BlobStore(store)  # may not purge: its duplicate chunks are counted
    await leaver.put_bytes("c", data)
    assert leaver.counts == {"duplicates": 1, "duplicate_chunks_left": 2}
    info = await nc.jetstream().stream_info(store._stream, subjects_filter="$O.>")
    chunk_subjects = [k for k in info.state.subjects or {} if ".C." in k]
    assert len(chunk_subjects) == 2  # the first upload's and the leaver's
    assert await keeper.get_bytes(first) == data


async def test_a_fetch_that_fails_verification_leaves_no_file(
    nc: Client, prefix: str, tmp_path: Path
) -> None:
    store = await ensure_store(nc.jetstream(), f"{prefix}_data")
    blobs = BlobStore(store, cache_dir=tmp_path / "cache")
    fake = hashlib.sha256(b"promised").hexdigest()
    await store.put(fake, os.urandom(STORE_CHUNK + 1))
    with pytest.raises(BlobError, match="does not match"):
        await blobs.fetch(DataRef(name="x", sha256=fake, size=8), tmp_path / "job" / "x")
    assert not (tmp_path / "job" / "x").exists()
    assert list((tmp_path / "cache").iterdir()) == []


async def test_provision_all_is_idempotent(nc: Client, prefix: str) -> None:
    js = nc.jetstream()
    subjects = Subjects(prefix)
    config = convert_config(BaseConfig, {"prefix": prefix})
    await provision_all(js, subjects, config)
    before = {
        name: (await js.stream_info(f"KV_{subjects.bucket(name)}")).config for name in BUCKET_SPECS
    }
    jobs_before = (await js.stream_info(subjects.jobs_stream)).config
    await provision_all(js, subjects, config)
    after = {
        name: (await js.stream_info(f"KV_{subjects.bucket(name)}")).config for name in BUCKET_SPECS
    }
    assert before == after
    assert (await js.stream_info(subjects.jobs_stream)).config == jobs_before


async def test_jobs_stream_takes_a_consumer_per_node_past_a_thousand(
    nc: Client, prefix: str
) -> None:
    # One durable per node plus the capability pools: nats-server's default stops a
    # stream at 1,000 consumers, which a 1,000-node cluster passes.
    js = nc.jetstream()
    subjects = Subjects(prefix)
    await ensure_stream(js, jobs_stream_config(subjects, BaseConfig()))
    try:
        for i in range(1_001):
            config = ConsumerConfig(
                durable_name=f"node-n{i}",
                filter_subject=subjects.jobs(f"node.n{i}"),
                ack_policy=AckPolicy.EXPLICIT,
            )
            await js.add_consumer(subjects.jobs_stream, config)
        info = await js.stream_info(subjects.jobs_stream)
        assert info.state.consumer_count == 1_001
    finally:
        await js.delete_stream(subjects.jobs_stream)
