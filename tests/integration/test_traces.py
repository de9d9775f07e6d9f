"""Trace context on a real nats-server, with a real job manager and a real node agent.

A submitted job's events, its dispatch and the agent's reports all carry one trace;
a malformed ``traceparent`` is counted and ignored; with an OTLP endpoint configured,
spans reach an OTLP/HTTP receiver running in this process on localhost.
"""

from __future__ import annotations

import sys
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from services.job_manager import traces
from services.job_manager.service import JobManagerService
from services.node_agent.service import NodeAgentService
from services.sync_planner.service import SyncPlannerService
from shared import tracing
from shared.blobs import BlobStore, ensure_store
from shared.codec import decode, encode
from shared.contracts import Event
from shared.events import JobCompleted, build_event
from shared.jobs import JobRecord, JobRef, JobReport, JobSpec, JobState, Requirements
from shared.subjects import Subjects
from shared.testing.fixtures import ServiceFactory
from shared.testing.helpers import eventually, stream_events_with_headers

pytestmark = pytest.mark.anyio

FAST = {"reaper_interval": 0.1, "retry_base_s": 0.05, "retry_max_s": 0.2}
#: Reports progress, then (given a path) waits for that file: the test lets it finish.
JOB = """
import json, os, sys, time
print(json.dumps({"progress": 0.5}), flush=True)
while len(sys.argv) > 1 and not os.path.exists(sys.argv[1]):
    time.sleep(0.05)
"""


def agent_config(tmp_path: Path, node_id: str) -> dict[str, Any]:
    return {
        "node_id": node_id,
        "work_dir": str(tmp_path / "work"),
        "capabilities": ["cpu", "shell"],
        "slots": 1,
        "min_free_disk_mb": 0,
        "min_memory_mb": 0,
        "fetch_timeout_s": 0.3,
        "progress_interval_s": 0.2,
        "report_timeout_s": 2.0,
    }


async def submit(
    nc: Client, prefix: str, node_id: str, headers: dict[str, str] | None, *argv: str
) -> str:
    spec = JobSpec(
        type="shell",
        args={"argv": [sys.executable, "-c", JOB, *argv]},
        requirements=Requirements(node_id=node_id),
    )
    subject = Subjects(prefix).api("job_manager", "submit")
    msg = await nc.request(subject, encode(spec), timeout=5, headers=headers)
    assert "Nats-Service-Error-Code" not in (msg.headers or {}), msg.data
    return decode(JobRecord, msg.data).job_id


async def finished(nc: Client, prefix: str, job_id: str) -> JobRecord:
    subject = Subjects(prefix).api("job_manager", "get")

    async def done() -> JobRecord | None:
        msg = await nc.request(subject, encode(JobRef(job_id=job_id)), timeout=5)
        rec = decode(JobRecord, msg.data)
        return rec if rec.state is JobState.COMPLETED else None

    return await eventually(done, timeout=60, what=f"{job_id} COMPLETED")


async def stored_events(nc: Client, prefix: str) -> list[tuple[Event, dict[str, str]]]:
    """Every event in P_EVENTS with its headers, in stream order."""
    return await stream_events_with_headers(nc, f"{prefix}_EVENTS")


async def job_events(nc: Client, prefix: str, job_id: str) -> list[tuple[Event, dict[str, str]]]:
    """Every event of ``job_id`` in P_EVENTS, with its headers, in stream order."""
    return [(e, h) for e, h in await stored_events(nc, prefix) if e.data.get("job_id") == job_id]


async def test_every_event_of_a_job_carries_the_submitters_trace(
    start_service: ServiceFactory, nc: Client, prefix: str, tmp_path: Path
) -> None:
    node_id = f"n-{uuid.uuid4().hex[:6]}"
    await start_service(JobManagerService, **FAST)
    await start_service(NodeAgentService, **agent_config(tmp_path, node_id))
    reports: list[Msg] = []

    async def on_report(msg: Msg) -> None:
        reports.append(msg)

    # A plain (non-queue) subscriber sees the agent's reports alongside the job manager.
    await nc.subscribe(Subjects(prefix).node_report(node_id), cb=on_report)
    caller = tracing.new_trace()._replace(state="vendor=abc")
    release = tmp_path / "release"
    job_id = await submit(nc, prefix, node_id, caller.headers(), str(release))

    async def progressed() -> bool:
        return any(e.type == "JOB_PROGRESS" for e, _ in await job_events(nc, prefix, job_id))

    await eventually(progressed, timeout=30, what="the agent's JOB_PROGRESS")
    release.touch()
    rec = await finished(nc, prefix, job_id)

    job = traces.job_span(rec)
    attempt = traces.attempt_span(rec)
    assert job is not None and attempt is not None
    assert job.trace_id == caller.trace_id and job.parent_id == caller.span_id
    assert attempt.parent_id == job.span_id and rec.tracestate == "vendor=abc"
    # Durable events follow their record's acknowledgment: wait until the end is in.
    found = await eventually(
        lambda: _with_end(job_events(nc, prefix, job_id)), what="JOB_COMPLETED stored"
    )
    kinds = [event.type for event, _ in found]
    assert kinds[0] == "JOB_SUBMITTED" and {"JOB_STARTED", "JOB_PROGRESS"} <= set(kinds)
    for event, headers in found:
        span = tracing.from_headers(headers, "test")
        assert span is not None, event.type
        assert span.trace_id == caller.trace_id, event.type
        assert headers[tracing.TRACESTATE] == "vendor=abc"
        # The job's own events are in the job span (its parent: the caller); an
        # attempt's events in the attempt span (its parent: the job span).
        expected = job if event.type == "JOB_SUBMITTED" else attempt
        assert (span.span_id, headers[tracing.PARENT_HEADER]) == (
            expected.span_id,
            expected.parent_id,
        ), event.type
    phases = [decode(dict[str, Any], m.data)["phase"] for m in reports]
    assert "started" in phases and "completed" in phases
    for msg in reports:
        assert (msg.headers or {}).get(tracing.TRACEPARENT) == attempt.traceparent


async def _with_end(
    pending: Any,
) -> list[tuple[Event, dict[str, str]]] | None:
    found: list[tuple[Event, dict[str, str]]] = await pending
    return found if any(e.type == "JOB_COMPLETED" for e, _ in found) else None


async def test_without_a_header_a_job_starts_its_own_trace_and_a_bad_one_is_counted(
    start_service: ServiceFactory, nc: Client, prefix: str, tmp_path: Path
) -> None:
    node_id = f"n-{uuid.uuid4().hex[:6]}"
    await start_service(JobManagerService, **FAST)
    await start_service(NodeAgentService, **agent_config(tmp_path, node_id))
    plain = await finished(nc, prefix, await submit(nc, prefix, node_id, None))
    before = tracing.MALFORMED["submit"]
    bad = {tracing.TRACEPARENT: "00-not-a-trace-01"}
    broken = await finished(nc, prefix, await submit(nc, prefix, node_id, bad))
    assert tracing.MALFORMED["submit"] == before + 1
    spans = [traces.job_span(plain), traces.job_span(broken)]
    assert all(s is not None and not s.parent_id for s in spans)
    assert spans[0] is not None and spans[1] is not None
    assert spans[0].trace_id != spans[1].trace_id


class Receiver:
    """An OTLP/HTTP trace receiver on localhost: decodes each export request."""

    def __init__(self) -> None:
        self.spans: list[Any] = []
        received = self.spans

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportTraceServiceRequest.FromString(body)
                for resource in request.resource_spans:
                    for scope in resource.scope_spans:
                        received.extend(scope.spans)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rx = Receiver()
    thread = threading.Thread(target=rx.server.serve_forever, daemon=True)
    thread.start()
    yield rx
    rx.server.shutdown()
    thread.join()


async def test_spans_reach_an_otlp_endpoint_when_one_is_configured(
    start_service: ServiceFactory, nc: Client, prefix: str, tmp_path: Path, receiver: Receiver
) -> None:
    node_id = f"n-{uuid.uuid4().hex[:6]}"
    manager = await start_service(JobManagerService, otlp_endpoint=receiver.url, **FAST)
    await start_service(NodeAgentService, **agent_config(tmp_path, node_id))
    caller = tracing.new_trace()
    rec = await finished(nc, prefix, await submit(nc, prefix, node_id, caller.headers()))
    job, attempt = traces.job_span(rec), traces.attempt_span(rec)
    assert job is not None and attempt is not None and manager.spans is not None

    def exported() -> dict[str, Any] | None:
        by_id = {s.span_id.hex(): s for s in receiver.spans}
        return by_id if job.span_id in by_id and attempt.span_id in by_id else None

    await anyio.to_thread.run_sync(manager.spans.flush)
    by_id = await eventually(exported, timeout=30, what="job and attempt spans exported")
    assert by_id[job.span_id].parent_span_id.hex() == caller.span_id
    assert by_id[attempt.span_id].parent_span_id.hex() == job.span_id
    names = {s.name for s in receiver.spans if s.trace_id.hex() == caller.trace_id}
    assert {"JOB_SUBMITTED", "JOB_STARTED", "JOB_COMPLETED"} <= names
    assert (
        msgspec.to_builtins(manager.health_check().details)["framework"]["tracing"][
            "spans_recorded"
        ]
        >= 5
    )


async def test_data_available_continues_the_selfplay_jobs_trace(
    start_service: ServiceFactory, nc: Client, prefix: str
) -> None:
    await start_service(SyncPlannerService, retention_interval_s=3600.0)
    blobs = BlobStore(await ensure_store(nc.jetstream(), Subjects(prefix).data_store))
    ref = await blobs.put_bytes("games.npz", b"games of sp-1")
    done = JobCompleted(
        job_id="sp-1",
        type="selfplay",
        attempt=1,
        node_id="n1",
        outputs=[ref],
        result={"game": "3x3k3", "games": 10, "x_wins": 1, "o_wins": 1, "draws": 8},
        labels={"kind": "selfplay", "game": "3x3k3", "model_id": "m0"},
    )
    attempt = tracing.new_trace().child()  # the selfplay attempt's span
    event = build_event(prefix, "job_manager", "jm-test", 1, done)
    subject = Subjects(prefix).event("job_manager", done.TYPE)
    await nc.jetstream().publish(subject, encode(event), headers=attempt.event_headers())

    async def announced() -> dict[str, str] | None:
        found = [h for e, h in await stored_events(nc, prefix) if e.type == "DATA_AVAILABLE"]
        return found[0] if found else None

    headers = await eventually(announced, what="DATA_AVAILABLE")
    span = tracing.from_headers(headers, "test")
    assert span is not None and span.trace_id == attempt.trace_id
    assert headers[tracing.PARENT_HEADER] == attempt.span_id


async def test_a_report_with_a_malformed_trace_header_is_counted_and_applied(
    start_service: ServiceFactory, nc: Client, prefix: str
) -> None:
    manager = await start_service(JobManagerService, **FAST)
    node_id = "n-bad"
    job_id = await submit(nc, prefix, node_id, None)
    msg = await nc.request(
        Subjects(prefix).api("job_manager", "get"), encode(JobRef(job_id=job_id)), timeout=5
    )
    rec = decode(JobRecord, msg.data)
    report = JobReport(
        job_id=job_id, attempt=rec.attempt, fencing=rec.fencing, node_id=node_id, phase="started"
    )
    before = tracing.MALFORMED["report"]
    reply = await nc.request(
        Subjects(prefix).node_report(node_id),
        encode(report),
        timeout=5,
        headers={tracing.TRACEPARENT: "00-xyz-01"},
    )
    assert "Nats-Service-Error-Code" not in (reply.headers or {}), reply.data
    assert decode(JobRecord, reply.data).state is JobState.RUNNING
    assert tracing.MALFORMED["report"] == before + 1
    details = msgspec.to_builtins(manager.health_check().details)
    assert details["framework"]["tracing"]["malformed"]["report"] >= 1
