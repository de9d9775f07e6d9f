"""Per-node credentials and narrowed managers: every promised denial, on a real server.

One nats-server runs ``deploy/nats/server.conf`` as shipped, TLS on (client
certificates verified), with the ``auth.conf`` and certificates of
``ringmaster nats-config --nodes a:cpu,b:cpu+gpu --tls``; every client connects over
TLS with its own certificate. The denial table of
``docs/operations.md`` (``shared/denials.py``) is walked row by row; then node A tries
the real thing with nats-py: take node B's pinned work, wipe the object store, and
report on B's attempt to the real job manager (running with its own user), which
refuses and counts a forged node. And the doc's table is the one the rules generate.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from nats.js.api import ConsumerConfig

from services.job_manager.service import JobManagerService
from shared.blob_wire import publish_chunks
from shared.blobs import BlobStore, DataStore, ensure_store
from shared.codec import decode, encode
from shared.config import BaseConfig
from shared.credentials import credential_options
from shared.denials import NODE_A, NODE_B, check, denials, markdown
from shared.jobs import JobDispatch, JobRecord, JobReport, JobSpec, Requirements
from shared.provision import ensure_stream, jobs_stream_config
from shared.subjects import Subjects
from shared.testing.authclient import connect_as as _connect_as
from shared.testing.authclient import violated
from shared.testing.cluster import AuthServer
from shared.testing.fixtures import service_config
from shared.testing.helpers import eventually
from shared.testing.server import new_prefix

pytestmark = pytest.mark.anyio

PREFIX = new_prefix()
S = Subjects(PREFIX)
NODES = ",".join(f"{n.node_id}:{'+'.join(n.capabilities)}" for n in (NODE_A, NODE_B))
DOC = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


@pytest.fixture(scope="module")
def auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthServer]:
    """A nats-server of deploy/nats/server.conf with kind and node users."""
    server = AuthServer(tmp_path_factory.mktemp("nodes"), PREFIX, nodes=NODES, tls=True)
    try:
        yield server
    finally:
        server.stop()


async def connect_as(auth: AuthServer, who: str, errors: list[Exception]) -> Client:
    """A client with ``who``'s user file over TLS (this server requires certificates)."""
    return await _connect_as(auth, who, errors, tls=True)


@pytest.fixture
async def operator(auth: AuthServer) -> AsyncIterator[Client]:
    """The operator's client, which may do everything."""
    client = await connect_as(auth, "operator", [])
    try:
        yield client
    finally:
        await client.close()


async def test_a_client_without_a_certificate_is_refused(auth: AuthServer) -> None:
    with pytest.raises((nats.errors.Error, OSError)):
        await nats.connect(
            auth.url,
            connect_timeout=2,
            max_reconnect_attempts=0,
            allow_reconnect=False,
            **credential_options(auth.user_file("operator")),
        )


def test_the_rules_keep_every_promised_denial() -> None:
    assert check(S) == []


def test_the_doc_carries_the_generated_table() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert markdown(Subjects()) in text, "run `ringmaster nats-config --denials` into the doc"


ROWS = denials(S)


@pytest.mark.parametrize("row", ROWS, ids=[f"{d.who}-{d.action}-{d.what}" for d in ROWS])
async def test_each_denial_of_the_table_holds(auth: AuthServer, row: object) -> None:
    from shared.denials import Denial

    assert isinstance(row, Denial)
    errors: list[Exception] = []
    client = await connect_as(auth, row.who, errors)
    try:
        if row.action == "publish":
            await client.publish(row.subject, b"{}")
        else:
            await client.subscribe(row.subject)
        await client.flush()
        await eventually(lambda: violated(errors), what=f"{row.who} denied {row.what}")
    finally:
        await client.close()


async def test_node_a_cannot_take_node_bs_pinned_work(auth: AuthServer, operator: Client) -> None:
    js = operator.jetstream()
    await ensure_stream(js, jobs_stream_config(S, BaseConfig()))
    await js.publish(S.jobs("node.b"), b"for b only")
    errors: list[Exception] = []
    a = await connect_as(auth, NODE_A.kind, errors)
    try:
        a_js = a.jetstream(timeout=1)
        config = ConsumerConfig(ack_wait=30)
        with pytest.raises(nats.errors.Error):  # the API request is dropped: no answer
            await a_js.pull_subscribe(
                S.jobs("node.b"), durable="node-b", stream=S.jobs_stream, config=config
            )
        await eventually(lambda: violated(errors), what="node A denied B's consumer")
        # Its own pinned pool works: the denial is about whose work it is.
        own = await a_js.pull_subscribe(
            S.jobs("node.a"), durable="node-a", stream=S.jobs_stream, config=config
        )
        with pytest.raises(nats.errors.TimeoutError):
            await own.fetch(1, timeout=0.5)
    finally:
        await a.close()
    info = await js.stream_info(S.jobs_stream)
    assert info.state.messages == 1  # B's dispatch is still there, unread


async def test_node_a_cannot_wipe_a_blob(auth: AuthServer, operator: Client) -> None:
    store = await ensure_store(operator.jetstream(), S.data_store)
    ref = await BlobStore(store).put_bytes("model.bin", b"champion weights")
    errors: list[Exception] = []
    a = await connect_as(auth, NODE_A.kind, errors)
    try:
        a_js = a.jetstream(timeout=1)
        stream = S.data_stream
        for request in (f"$JS.API.STREAM.PURGE.{stream}", f"$JS.API.STREAM.MSG.DELETE.{stream}"):
            with pytest.raises(nats.errors.Error):
                await a.request(request, b'{"seq": 1}', timeout=1)
        await eventually(lambda: violated(errors), what="node A denied purging blobs")
        # It may still upload chunks under its own id (the sync planner checks and names
        # them: test_blob_seal.py), and read existing blobs (job inputs).
        sent = await publish_chunks(a_js, S.data_store, "a.outputNUID", io.BytesIO(b"games"))
        assert sent.chunks == 1
        a_store = BlobStore(DataStore(a_js, S.data_store))
        assert await a_store.get_bytes(ref) == b"champion weights"
    finally:
        await a.close()
    assert await BlobStore(store).get_bytes(ref) == b"champion weights"


async def test_node_a_cannot_report_on_node_bs_attempt(auth: AuthServer, operator: Client) -> None:
    """The real job manager, with its own user: A's report on B's attempt goes nowhere."""
    files = auth.tls_files()
    cfg = service_config(
        JobManagerService, auth.url, PREFIX, credentials_file=auth.user_file("job_manager"), **files
    )
    async with JobManagerService(cfg).running() as manager:
        spec = JobSpec(type="train", requirements=Requirements(node_id=NODE_B.node_id))
        reply = await operator.request(S.api("job_manager", "submit"), encode(spec), timeout=5)
        rec = decode(JobRecord, reply.data)
        assert rec.node_id == NODE_B.node_id
        # What B's dispatch says (A cannot read it; the operator shows it here).
        sub = await operator.jetstream().pull_subscribe(
            S.jobs("node.b"), durable="op-peek", stream=S.jobs_stream
        )
        d = None
        while d is None:  # skip the raw message an earlier test left for B
            (msg,) = await sub.fetch(1, timeout=5)
            if msg.data.startswith(b"{"):
                d = decode(JobDispatch, msg.data)
        errors: list[Exception] = []
        a = await connect_as(auth, NODE_A.kind, errors)
        try:
            report = JobReport(
                job_id=d.job_id,
                attempt=d.attempt,
                fencing=d.fencing,
                node_id="b",
                phase="completed",
            )
            # On B's subject: the server refuses the publish; nobody answers.
            with pytest.raises(nats.errors.Error):
                await a.request(S.node_report("b"), encode(report), timeout=1)
            await eventually(lambda: violated(errors), what="node A denied B's report subject")
            # On its own subject, naming B: the job manager refuses it (403), and counts it.
            answer = await a.request(S.node_report("a"), encode(report), timeout=5)
            assert (answer.headers or {}).get("Nats-Service-Error-Code") == "403"
            # Naming itself, about B's attempt: refused as the wrong node (409).
            mine = JobReport(
                job_id=d.job_id,
                attempt=d.attempt,
                fencing=d.fencing,
                node_id="a",
                phase="completed",
            )
            answer = await a.request(S.node_report("a"), encode(mine), timeout=5)
            assert (answer.headers or {}).get("Nats-Service-Error-Code") == "409"
        finally:
            await a.close()
        refused = manager.health_check().details["refused_reports"]
        assert refused == {"forged_node": 1, "wrong_node": 1}
        got = await operator.request(
            S.api("job_manager", "get"), encode({"job_id": rec.job_id}), timeout=5
        )
        assert decode(JobRecord, got.data).state == "DISPATCHED"
