"""The orchestrator's dashboard: its files, the ``/events`` stream, and that it stays bounded."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import msgspec
import pytest
from anyio.abc import SocketStream
from nats.aio.client import Client

from services.orchestrator.cluster_view import ClusterView
from services.orchestrator.elo import EloHistory
from services.orchestrator.service import OrchestratorService
from services.orchestrator.sse import SseHub
from shared.codec import encode
from shared.events import JobFailed, JobProgress, ServiceLost, build_event
from shared.jobs import DataRef
from shared.kv import bucket_config, ensure_bucket, keys_matching
from shared.subjects import Subjects
from shared.testing.fixtures import ServiceFactory
from shared.testing.helpers import eventually
from shared.training import Champion, ModelRecord

pytestmark = pytest.mark.anyio

FAST: dict[str, Any] = {
    "beacon_interval": 0.1,
    "check_interval": 0.05,
    "http_port": 0,
    "dashboard_interval": 0.05,
}


async def start_orchestrator(start: ServiceFactory, **overrides: Any) -> OrchestratorService:
    svc: OrchestratorService = await start(OrchestratorService, **{**FAST, **overrides})
    assert svc.http is not None and svc.http.port
    return svc


class Sse:
    """A raw event-stream client: the response head, then one frame at a time."""

    def __init__(self, stream: SocketStream) -> None:
        self.stream = stream
        self.buffer = b""
        self.head = b""

    async def _fill(self, until: bytes) -> bytes:
        while until not in self.buffer:
            chunk = await self.stream.receive()
            self.buffer += chunk
        part, self.buffer = self.buffer.split(until, 1)
        return part

    async def frame(self) -> tuple[str, Any]:
        """The next frame's event name and decoded data (the ``retry`` line is skipped)."""
        with anyio.fail_after(10):
            if not self.head:
                self.head = await self._fill(b"\r\n\r\n")
            while True:
                fields = dict(
                    line.split(": ", 1) for line in (await self._fill(b"\n\n")).decode().split("\n")
                )
                if "event" in fields:
                    return fields["event"], msgspec.json.decode(fields["data"])

    async def until(self, event: str, check: Any = lambda _: True) -> Any:
        """Frames until one named ``event`` whose data passes ``check``."""
        while True:
            name, data = await self.frame()
            if name == event and check(data):
                return data


@asynccontextmanager
async def sse(port: int) -> AsyncIterator[Sse]:
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(b"GET /events HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n")
        yield Sse(stream)


async def get(port: int, path: str, method: str = "GET") -> tuple[int, bytes, bytes]:
    """Status code, head and body of one request."""
    with anyio.fail_after(5):
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            await stream.send(f"{method} {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
            raw = b""
            while True:
                try:
                    raw += await stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    break
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), head, body


async def publish_event(nc: Client, prefix: str, data: Any, seq: int) -> None:
    event = build_event(prefix, "tester", "tester-1", seq, data)
    await nc.publish(Subjects(prefix).event("tester", data.TYPE), encode(event))


def failed(i: int) -> JobFailed:
    return JobFailed(job_id=f"job-{i}", type="shell", attempt=1, error="boom", permanent=True)


async def test_page_files_and_live_stream(
    start_service: ServiceFactory, nc: Client, prefix: str
) -> None:
    orch = await start_orchestrator(start_service)
    port = orch.http.port  # type: ignore[union-attr]
    code, head, body = await get(port, "/")
    assert code == 200 and b"text/html" in head
    assert b'src="/dashboard.js"' in body and b"http" not in body.split(b"<body>")[0][200:]
    code, head, body = await get(port, "/dashboard.js")
    assert code == 200 and b"javascript" in head and b'new EventSource("/events")' in body
    assert (await get(port, "/dashboard.css"))[0] == 200
    assert (await get(port, "/events", "HEAD"))[0] == 405
    async with sse(port) as client:
        snapshot = await client.until("snapshot")
        assert b"text/event-stream" in client.head
        assert orch.instance in {s["instance"] for s in snapshot["services"]}
        assert (await client.until("events"))["reset"] is True
        await eventually(lambda: orch.dashboard.hub.clients == 1, what="one client")
        await publish_event(nc, prefix, failed(1), 1)
        batch = await client.until(
            "events", lambda d: any(e["type"] == "JOB_FAILED" for e in d["events"])
        )
        tested = [e for e in batch["events"] if e["source"] == "tester/tester-1"]
        assert [e["type"] for e in tested] == ["JOB_FAILED"]
        assert tested[0]["text"].startswith("error=boom job_id=job-1 type=shell")
        later = await client.until("snapshot", lambda d: d["failures"])
        assert [f["type"] for f in later["failures"]] == ["JOB_FAILED"]
        details = orch.health_check().details["dashboard"]
        assert details["clients"] == 1 and details["connects"] == 1
    await eventually(lambda: orch.dashboard.hub.clients == 0, what="the client gone")
    assert orch.health_check().details["dashboard"]["disconnects"] == 1


async def test_stays_bounded_through_many_events_and_clients(
    start_service: ServiceFactory, nc: Client, prefix: str
) -> None:
    orch = await start_orchestrator(
        start_service, dashboard_tail=50, dashboard_failures=10, dashboard_max_clients=4
    )
    port = orch.http.port  # type: ignore[union-attr]
    dash = orch.dashboard
    # Thousands of events through the subscription: the deques keep their caps.
    for i in range(1500):
        data = failed(i) if i % 3 == 0 else ServiceLost(service="x", instance=f"x-{i}", silent_s=1)
        await publish_event(nc, prefix, data, i)
        await publish_event(
            nc, prefix, JobProgress(job_id="j", attempt=1, node_id="n", progress=0.5), i
        )
    await nc.flush()
    await eventually(lambda: dash.events["tailed"] >= 1500, what="every event taken in")
    assert dash.events["quiet"] >= 1500
    assert (len(dash.tail), len(dash.failures)) == (50, 10)
    assert len(dash.fresh) <= 50
    assert dash.tail[-1]["seq"] - dash.tail[0]["seq"] == 49

    # Clients come and go, past the cap each round: the registry always returns to 0.
    for _ in range(15):
        async with sse(port) as a, sse(port) as b, sse(port) as c, sse(port) as d:
            for client in (a, b, c, d):
                greeting = await client.until("events")
                assert greeting["reset"] is True and len(greeting["events"]) == 50
                assert len((await client.until("snapshot"))["failures"]) == 10
            assert dash.hub.clients == 4
            code, _, body = await get(port, "/events")
            assert code == 503 and b"too many dashboard clients" in body
        await eventually(lambda: dash.hub.clients == 0, what="every client gone")
    health = orch.health_check().details["dashboard"]
    assert health["clients"] == 0
    assert health["connects"] == health["disconnects"] == 60
    assert health["rejected_full"] == 15
    assert dash.hub._clients == {}  # nothing left behind for a client that left


async def test_a_client_that_does_not_read_drops_frames_not_memory() -> None:
    """``publish`` never queues more than the per-client buffer; the rest is counted."""
    hub = SseHub(list, buffer=4)
    send, receive = anyio.create_memory_object_stream[bytes](hub.buffer)
    hub._clients[0] = send  # a client whose socket has stopped taking frames
    with send, receive:
        for i in range(1000):
            hub.publish(b"frame %d" % i)
        assert receive.statistics().current_buffer_used == 4
        assert hub.stats["dropped_frames"] == 996
        assert hub.health()["dropped_frames"] == 996


def test_a_failing_greeting_is_counted_not_fatal() -> None:
    def broken() -> list[bytes]:
        raise KeyError("game")

    hub = SseHub(broken)
    assert hub._greet() == b"" and hub._greet() == b""
    assert hub.health()["greeting_errors"] == 2


def record(model_id: str, generation: int, status: str, elo: float) -> bytes:
    ref = DataRef(name=f"{model_id}.npz", sha256="0" * 64, size=1)
    return encode(
        ModelRecord(
            game="3x3k3",
            model_id=model_id,
            ref=ref,
            generation=generation,
            status=status,  # type: ignore[arg-type]
            elo=elo,
            created_at=1.0,
        )
    )


async def test_elo_curves_and_champions_from_the_models_bucket(nc: Client, prefix: str) -> None:
    subjects = Subjects(prefix)
    js = nc.jetstream()
    history = EloHistory(subjects, max_points=3)
    await history.refresh(js)  # no bucket yet: nothing, counted
    assert history.games() == [] and history.reads["no_bucket"] == 1
    kv = await ensure_bucket(js, bucket_config(subjects.bucket("models")))
    assert await keys_matching(kv, "model.>") == []
    await kv.put("model.3x3k3.a", record("a", 1, "archived", 120.0))
    await kv.put("model.3x3k3.b", record("b", 2, "rejected", 0.0))
    await kv.put("model.3x3k3.c", record("c", 3, "candidate", 0.0))
    await kv.put("state.3x3k3", b"{}")
    champion = Champion(
        game="3x3k3",
        model_id="a",
        ref=DataRef(name="a", sha256="0" * 64, size=1),
        generation=1,
        elo=120.0,
        since=1.0,
    )
    await kv.put("champion.3x3k3", encode(champion))
    # Subject patterns, filtered by the server (not substrings of the key).
    assert sorted(await keys_matching(kv, "model.>")) == [
        "model.3x3k3.a",
        "model.3x3k3.b",
        "model.3x3k3.c",
    ]
    assert await keys_matching(kv, "champion.>") == ["champion.3x3k3"]
    await history.refresh(js)
    assert history.curve("3x3k3") == [(1, 120.0)] and history.reads["records"] == 3
    # Only the undecided candidate is read again; once crowned, it joins the curve.
    await kv.put("model.3x3k3.c", record("c", 3, "champion", 180.5))
    await history.refresh(js)
    assert history.curve("3x3k3") == [(1, 120.0), (3, 180.5)] and history.reads["records"] == 4
    for gen in range(4, 8):
        await kv.put(f"model.3x3k3.g{gen}", record(f"g{gen}", gen, "archived", 200.0 + gen))
    await history.refresh(js)
    assert [g for g, _ in history.curve("3x3k3")] == [5, 6, 7]  # the newest max_points
    assert history.trimmed == {"3x3k3"}
    # The status view (what the dashboard's snapshot starts from) lists the champion.
    view = ClusterView(subjects)
    await view.refresh_models(js)
    assert [(m.game, m.champion, m.elo) for m in view.models()] == [("3x3k3", "a", 120.0)]
