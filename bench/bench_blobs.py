"""Object-store transfer with sha256 (put and fetch of a blob), beside a copy on disk.

The figure is :class:`shared.blobs.BlobStore` on this benchmark's own nats-server:
``put_file`` (read, hash and store the file in chunks, one pass) and ``fetch`` (get
every chunk, verify the sha256, write the file), in MB/s of the file's size, best of
``ROUNDS``. The raw limit is ``shutil.copyfile`` of the same file on the same disk in
the same run; sha256 alone over the file is recorded for context.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from pathlib import Path

import anyio
import nats

from bench.harness import Ctx, Row
from shared.blob_wire import FETCH_CHUNKS, INFLIGHT
from shared.blobs import BlobStore, ensure_store, sha256_file

NAME = "blobs"
SIZE = 64 * 2**20
ROUNDS = 3
GOAL = 200.0  # MB/s
MB = 2**20


def make_file(path: Path, size: int) -> None:
    """Incompressible bytes (each round writes a new file, so nothing is deduplicated)."""
    with path.open("wb") as fh:
        left = size
        while left:
            n = min(left, 4 * MB)
            fh.write(os.urandom(n))
            left -= n


def copy_rate(src: Path, dest: Path) -> float:
    """MB/s of ``shutil.copyfile`` (the file is in the page cache, as for the put)."""
    start = time.perf_counter()
    shutil.copyfile(src, dest)
    with dest.open("rb") as fh:
        os.fsync(fh.fileno())
    elapsed = time.perf_counter() - start
    dest.unlink()
    return src.stat().st_size / MB / elapsed


def hash_rate(path: Path) -> float:
    """MB/s of sha256 over the file alone."""
    start = time.perf_counter()
    sha256_file(path)
    return path.stat().st_size / MB / (time.perf_counter() - start)


async def measure(ctx: Ctx, url: str) -> list[Row]:
    """Rounds of put, fetch and copy of one fresh file each."""
    nc = await nats.connect(url, connect_timeout=5)
    puts: list[float] = []
    gets: list[float] = []
    copies: list[float] = []
    hashes: list[float] = []
    try:
        store = BlobStore(await ensure_store(nc.jetstream(), "BENCH_DATA"))
        for n in range(ROUNDS):
            src = ctx.path(f"blob-{n}.bin")
            await anyio.to_thread.run_sync(make_file, src, SIZE)
            copies.append(await anyio.to_thread.run_sync(copy_rate, src, ctx.path("copy.bin")))
            hashes.append(await anyio.to_thread.run_sync(hash_rate, src))
            start = time.perf_counter()
            ref = await store.put_file(src)
            puts.append(SIZE / MB / (time.perf_counter() - start))
            dest = ctx.path(f"fetched-{n}.bin")
            start = time.perf_counter()
            await store.fetch(ref, dest)
            gets.append(SIZE / MB / (time.perf_counter() - start))
            if hashlib.sha256(dest.read_bytes()).hexdigest() != ref.sha256:
                raise RuntimeError("fetched blob does not match")
            ctx.log(
                f"    round {n + 1}: put {puts[-1]:.0f} MB/s, fetch {gets[-1]:.0f} MB/s, "
                f"copy {copies[-1]:.0f} MB/s, sha256 {hashes[-1]:.0f} MB/s"
            )
            src.unlink()
            dest.unlink()
    finally:
        await nc.close()
    ctx.context(NAME, "sha256 of the file alone, best (MB/s)", max(hashes), "MB/s")

    def text(values: list[float]) -> str:
        return ", ".join(f"{v:.0f}" for v in values)

    notes = [
        f"a {SIZE // MB} MiB file of random bytes per round, {ROUNDS} rounds, best of them; "
        f"put (MB/s): {text(puts)}; fetch: {text(gets)}; copyfile + fsync: {text(copies)}; "
        f"sha256 alone: {text(hashes)}",
        "put = BlobStore.put_file (one pass: chunks read and hashed in a worker thread, "
        f"publishes pipelined, {INFLIGHT} acks in flight, then the meta message); "
        f"fetch = BlobStore.fetch without a cache (pull {FETCH_CHUNKS} chunks a batch, "
        "hash and write each batch in a worker thread while the next arrives, verify)",
    ]
    rows = []
    for label, values in (("put", puts), ("fetch", gets)):
        rows.append(
            Row(
                key=NAME,
                title=f"Object-store transfer with sha256, {label} ({SIZE // MB} MiB blob)",
                figure=max(values),
                unit="MB/s",
                raw=max(copies),
                raw_label="shutil.copyfile of the same file on disk, fsynced",
                goal=GOAL,
                higher_is_better=True,
                notes=notes,
            )
        )
    return rows


def run(ctx: Ctx) -> list[Row]:
    """Measure on a nats-server of this benchmark's own."""
    server = ctx.server()
    return anyio.run(measure, ctx, server.url)
