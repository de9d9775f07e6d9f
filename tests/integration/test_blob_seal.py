"""A node can put blobs but never delete or overwrite one: on a real server, real users.

One nats-server runs ``deploy/nats/server.conf`` with the users of
``ringmaster nats-config --nodes a,b``; the real sync planner runs as its own user and
seals uploads. Node A, with its own user, uploads outputs end to end through the
node agent's upload path; then tries to delete or replace a stored blob by writing
its meta message (refused by the server), and through the seal endpoint with other
content (refused by the planner, counted in its health). The blob stays intact.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client

from services.job_manager.service import JobManagerService
from services.node_agent.config import NodeAgentConfig
from services.node_agent.service import NodeAgentService
from services.node_agent.workspace import node_blobs, seals_uploads, upload_outputs
from services.sync_planner.service import SyncPlannerService
from shared.blob_seal import SealClient, SealRefused, SealRequest
from shared.blob_wire import STORE_CHUNK, digest_of, meta_subject, publish_chunks
from shared.blobs import BlobStore, DataStore, ensure_store
from shared.codec import decode, encode
from shared.jobs import DataRef, JobRecord, JobSpec, Requirements
from shared.subjects import Subjects
from shared.testing.authclient import connect_as
from shared.testing.cluster import AuthServer
from shared.testing.fixtures import service_config
from shared.testing.helpers import eventually
from shared.testing.server import new_prefix

pytestmark = pytest.mark.anyio

PREFIX = new_prefix()
S = Subjects(PREFIX)


@pytest.fixture(scope="module")
def auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthServer]:
    """A nats-server of deploy/nats/server.conf with kind users and nodes a and b."""
    server = AuthServer(tmp_path_factory.mktemp("seal"), PREFIX, nodes="a,b")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def planner(auth: AuthServer) -> AsyncIterator[SyncPlannerService]:
    """The real sync planner, with its own user."""
    cfg = service_config(
        SyncPlannerService, auth.url, PREFIX, credentials_file=auth.user_file("sync_planner")
    )
    async with SyncPlannerService(cfg).running() as service:
        yield service


@pytest.fixture
async def node_a(auth: AuthServer) -> AsyncIterator[tuple[Client, list[Exception]]]:
    """Node A's client and the errors the server sent it."""
    errors: list[Exception] = []
    client = await connect_as(auth, "node-a", errors)
    try:
        yield client, errors
    finally:
        await client.close()


def violated(errors: list[Exception]) -> bool:
    """Whether the server reported a permissions violation."""
    return any("permissions violation" in str(e).lower() for e in errors)


def agent_config(auth: AuthServer, tmp_path: Path) -> NodeAgentConfig:
    """Node A's agent config: its own user file, upload mode left to ``auto``."""
    return NodeAgentConfig(
        node_id="a",
        prefix=PREFIX,
        credentials_file=auth.user_file("node-a"),
        work_dir=str(tmp_path / "work"),
    )


async def test_a_node_upload_is_sealed_end_to_end(
    auth: AuthServer,
    planner: SyncPlannerService,
    node_a: tuple[Client, list[Exception]],
    tmp_path: Path,
) -> None:
    client, errors = node_a
    cfg = agent_config(auth, tmp_path)
    assert seals_uploads(cfg.blob_upload, cfg.credentials_file, S, "a")  # its own user
    store = DataStore(client.jetstream(), S.data_store)
    blobs = node_blobs(client, store, cfg, S)
    outputs = Path(cfg.work_dir) / "outputs"
    outputs.mkdir(parents=True)
    games = os.urandom(2 * STORE_CHUNK + 5)
    (outputs / "games.bin").write_bytes(games)
    (outputs / "result.json").write_text('{"games": 3}')
    refs, result = await upload_outputs(blobs, outputs)
    assert result == {"games": 3}
    assert refs == [
        DataRef(name="games.bin", sha256=hashlib.sha256(games).hexdigest(), size=len(games))
    ]
    # Anyone reads it, nats-py's own ObjectStore included (it checks the digest).
    got = await store.get(refs[0].sha256)
    assert got.data == games and got.info.nuid.startswith("a.")
    # The same output again: stored once, the duplicate chunks purged by the planner.
    again, _ = await upload_outputs(blobs, outputs)
    assert again == refs
    assert blobs.counts == {"sealed": 1, "duplicates": 1}
    seals = planner.health_check().details["seals"]
    assert seals == {"sealed": 1, "already_stored": 1, "duplicates_purged": 1}
    assert (await store.get(refs[0].sha256)).data == games
    assert not violated(errors)


async def test_node_a_cannot_delete_or_replace_a_blob_by_its_meta(
    auth: AuthServer, node_a: tuple[Client, list[Exception]]
) -> None:
    operator = await connect_as(auth, "operator", [])
    try:
        store = await ensure_store(operator.jetstream(), S.data_store)
        ref = await BlobStore(store).put_bytes("model.bin", b"champion weights")
        client, errors = node_a
        a_js = client.jetstream(timeout=1)
        a_store = await a_js.object_store(S.data_store)
        with pytest.raises(nats.errors.Error):  # a delete marker: denied, so never acked
            await a_store.delete(ref.sha256)
        tombstone = {"name": ref.sha256, "bucket": S.data_store, "nuid": "x", "deleted": True}
        with pytest.raises(nats.errors.Error):
            await a_js.publish(
                meta_subject(S.data_store, ref.sha256), json.dumps(tombstone).encode()
            )
        with pytest.raises(nats.errors.Error):  # nats-py's put writes a meta message too
            await a_store.put(ref.sha256, b"forged weights")
        await eventually(lambda: violated(errors), what="node A denied the meta subject")
        assert await BlobStore(store).get_bytes(ref) == b"champion weights"
        info = await store.get_info(ref.sha256)
        assert info.digest == digest_of(ref.sha256) and not info.deleted
    finally:
        await operator.close()


async def test_a_seal_with_other_content_is_refused_and_counted(
    auth: AuthServer,
    planner: SyncPlannerService,
    node_a: tuple[Client, list[Exception]],
    tmp_path: Path,
) -> None:
    operator = await connect_as(auth, "operator", [])
    try:
        store = await ensure_store(operator.jetstream(), S.data_store)
        original = os.urandom(STORE_CHUNK + 100)
        ref = await BlobStore(store).put_bytes("model.bin", original)
    finally:
        await operator.close()
    client, errors = node_a
    js = client.jetstream(timeout=2)
    forged = os.urandom(len(original))  # same size and chunk count, other bytes
    with (tmp_path / "forged.bin").open("w+b") as fh:
        fh.write(forged)
        fh.seek(0)
        sent = await publish_chunks(js, S.data_store, "a.forgedNUIDforgedNUID0", fh)
    seal = SealClient(client, S.api("sync_planner", "seal"), timeout=10)

    def claim(**changes: object) -> SealRequest:
        fields: dict[str, object] = {
            "name": ref.sha256,
            "sha256": ref.sha256,
            "size": len(original),
            "nuid": sent.nuid,
            "chunks": sent.chunks,
            "chunk_size": STORE_CHUNK,
        }
        return SealRequest(**{**fields, **changes})  # type: ignore[arg-type]

    refusals = [
        (claim(), 400, "do not hash"),  # the stored name, the forged chunks
        (claim(size=len(original) + 1), 409, "other content"),  # the name, other size
        (claim(sha256=sent.sha256), 400, "name is its sha256"),  # name and hash differ
        (claim(chunks=sent.chunks + 1, size=len(original) + STORE_CHUNK), 409, "other"),
    ]
    other = hashlib.sha256(b"not the forged bytes").hexdigest()
    refusals += [
        (claim(name=other, sha256=other), 400, "do not hash"),  # a new name, wrong bytes
        (claim(name=other, sha256=other, chunks=1, size=10), 400, "chunks uploaded"),
    ]
    for request, code, words in refusals:
        with pytest.raises(SealRefused, match=words) as caught:
            await seal(request)
        assert caught.value.code == code
    seals = planner.health_check().details["seals"]
    assert seals == {
        "refused_mismatch": 2,
        "refused_name_taken": 2,
        "refused_invalid": 1,
        "refused_chunk_count": 1,
    }
    after = await (await js.object_store(S.data_store)).get(ref.sha256)
    assert after.data == original
    with pytest.raises(nats.errors.Error):
        await (await js.object_store(S.data_store)).get_info(other)
    assert not violated(errors)


OUTPUT_JOB = """
import os, pathlib
out = pathlib.Path(os.environ["RINGMASTER_OUTPUTS_DIR"])
(out / "games.bin").write_bytes(bytes(range(256)) * 3000)
(out / "result.json").write_text('{"games": 7}')
"""


async def test_the_real_agent_as_node_a_completes_a_job_with_sealed_outputs(
    auth: AuthServer, planner: SyncPlannerService, tmp_path: Path
) -> None:
    """Job manager, sync planner and node agent, each with its own user: outputs stored."""
    manager_cfg = service_config(
        JobManagerService, auth.url, PREFIX, credentials_file=auth.user_file("job_manager")
    )
    agent_cfg = service_config(
        NodeAgentService,
        auth.url,
        PREFIX,
        credentials_file=auth.user_file("node-a"),
        node_id="a",
        work_dir=str(tmp_path / "work"),
        commands={"emit": ["{python}", "-c", OUTPUT_JOB]},
        slots=1,
        min_free_disk_mb=0,
        min_memory_mb=0,
        fetch_timeout_s=0.3,
    )
    operator = await connect_as(auth, "operator", [])
    try:
        async with (
            JobManagerService(manager_cfg).running(),
            NodeAgentService(agent_cfg).running() as agent,
        ):
            spec = JobSpec(type="emit", requirements=Requirements(node_id="a"))
            reply = await operator.request(S.api("job_manager", "submit"), encode(spec), timeout=5)
            job_id = decode(JobRecord, reply.data).job_id

            async def record() -> JobRecord:
                got = await operator.request(
                    S.api("job_manager", "get"), encode({"job_id": job_id}), timeout=5
                )
                return decode(JobRecord, got.data)

            async def ended() -> JobRecord | None:
                rec = await record()
                return rec if rec.state in ("COMPLETED", "FAILED") else None

            rec = await eventually(ended, what="the job ends", timeout=30)
            assert rec.state == "COMPLETED", rec
            # Two sealed uploads: the output, and the attempt's stdout/stderr (logs.json).
            assert agent.health_check().details["uploads"] == {"sealed": 2}
        assert rec.result is not None and rec.result.result == {"games": 7}
        (ref,) = rec.result.outputs
        expected = bytes(range(256)) * 3000
        assert ref.sha256 == hashlib.sha256(expected).hexdigest()
        store = await operator.jetstream().object_store(S.data_store)
        got = await store.get(ref.sha256)
        assert got.data == expected and got.info.nuid.startswith("a.")
        assert rec.result.logs is not None
        logs = await store.get(rec.result.logs.sha256)
        assert logs.info.nuid.startswith("a.")
        assert planner.health_check().details["seals"]["sealed"] == 2
    finally:
        await operator.close()
