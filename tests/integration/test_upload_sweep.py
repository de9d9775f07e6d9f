"""The sweep of unsealed node uploads, on a real server, with a clock of the test's own."""

from __future__ import annotations

import io
import os

import pytest
from nats.aio.client import Client

from services.sync_planner.sweep import UploadSweep
from shared.blob_wire import STORE_CHUNK, chunk_subject, meta_info, publish_chunks, write_meta
from shared.blobs import BlobStore, ensure_store

pytestmark = pytest.mark.anyio

GRACE = 100.0


async def test_only_unsealed_node_uploads_go_and_only_after_the_grace(
    nc: Client, prefix: str
) -> None:
    js = nc.jetstream()
    bucket = f"{prefix}_data"
    store = await ensure_store(js, bucket)
    data = os.urandom(STORE_CHUNK + 1)
    orphan = await publish_chunks(js, bucket, "a.orphan", io.BytesIO(data))
    growing = await publish_chunks(js, bucket, "b.growing", io.BytesIO(b"first part"))
    sealed = await publish_chunks(js, bucket, "a.sealed", io.BytesIO(b"named"))
    await write_meta(js, meta_info(bucket, sealed.sha256, sealed))
    await publish_chunks(js, bucket, "managerNUID", io.BytesIO(b"a manager's, unnamed"))
    now = [0.0]
    lease = [False]
    sweep = UploadSweep(js, store, bucket, GRACE, lambda: lease[0], clock=lambda: now[0])

    async def chunk_subjects() -> set[str]:
        info = await js.stream_info(f"OBJ_{bucket}", subjects_filter=f"$O.{bucket}.C.>")
        return set(info.state.subjects or {})

    before = await chunk_subjects()
    await sweep.tick()  # without the lease: nothing looked at
    assert sweep.counts == {"passes_skipped_no_lease": 1} and not sweep.pending
    lease[0] = True
    await sweep.tick()
    assert set(sweep.pending) == {
        chunk_subject(bucket, "a.orphan"),
        chunk_subject(bucket, "b.growing"),
    }
    now[0] = GRACE - 1
    await sweep.tick()
    assert await chunk_subjects() == before  # inside the grace: nothing purged
    await publish_chunks(js, bucket, "b.growing", io.BytesIO(b"second part"))
    now[0] = GRACE
    await sweep.tick()  # the orphan is due; the growing upload's clock restarted
    after = await chunk_subjects()
    assert after == before - {chunk_subject(bucket, orphan.nuid)}
    assert sweep.counts["unsealed_uploads_purged"] == 1
    assert sweep.counts["unsealed_chunks_purged"] == orphan.chunks == 2
    assert sweep.pending[chunk_subject(bucket, growing.nuid)] == (2, GRACE)
    now[0] = 2 * GRACE
    await sweep.tick()
    assert await chunk_subjects() == {
        chunk_subject(bucket, "a.sealed"),
        chunk_subject(bucket, "managerNUID"),
    }
    assert sweep.counts["unsealed_uploads_purged"] == 2
    # The named blob is intact.
    assert await BlobStore(store).exists(sealed.sha256)
    assert (await store.get(sealed.sha256)).data == b"named"
