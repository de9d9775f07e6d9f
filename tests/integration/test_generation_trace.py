"""One generation, one trace: the training coordinator on a real nats-server with the
real job manager, node selector and node agent (the set-up of
test_training_coordinator). Its training job, evaluation jobs, their events and the
promotion all carry the generation's trace id."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from nats.aio.msg import Msg

from services.job_manager import traces
from services.training_coordinator.service import TrainingCoordinatorService
from shared import tracing
from shared.codec import encode
from shared.contracts import Event
from shared.testing.fixtures import ServiceFactory
from shared.testing.helpers import eventually, stream_events_with_headers
from shared.training import TrainingData
from tests.integration.test_traces import Receiver, receiver
from tests.integration.test_training_coordinator import (
    COORDINATOR,
    GAME,
    Cluster,
    _idle,
    cluster,
)

pytestmark = pytest.mark.anyio
__all__ = ["cluster", "receiver"]  # the fixtures, used by name

GENERATION_EVENTS = {
    "TRAINING_STARTED",
    "TRAINING_COMPLETED",
    "EVALUATION_STARTED",
    "EVALUATION_COMPLETED",
    "MODEL_PROMOTED",
}


async def headed_events(cluster: Cluster) -> list[tuple[Event, dict[str, str]]]:
    """Every event in P_EVENTS with its headers, in stream order."""
    return await stream_events_with_headers(cluster.nc, cluster.subjects.events_stream)


async def test_a_generations_jobs_events_and_promotion_share_one_trace(
    cluster: Cluster, start_service: ServiceFactory, receiver: Receiver
) -> None:
    games = await cluster.games(500)
    cluster.outcome(38, 1, 1)

    async def training_data(msg: Msg) -> None:
        reply = TrainingData(game=GAME, refs=[games], games=500, games_total=500)
        await msg.respond(encode(reply))

    async def prefetch(msg: Msg) -> None:
        await msg.respond(b"{}")

    subs = [
        await cluster.nc.subscribe(cluster.subjects.api("sync_planner", m), cb=cb)
        for m, cb in (("training_data", training_data), ("prefetch", prefetch))
    ]
    try:
        # Exporting to an OTLP/HTTP receiver in this process (see test_traces).
        coordinator = await start_service(
            TrainingCoordinatorService, otlp_endpoint=receiver.url, **COORDINATOR
        )
        await cluster.one("MODEL_PROMOTED")
    finally:
        for sub in subs:
            await sub.unsubscribe()
    state = await eventually(lambda: _idle(cluster), what="idle")
    generation = state.span
    assert generation is not None and not generation.parent_id  # the generation's root

    jobs = [*await cluster.jobs("train"), *await cluster.jobs("evaluate")]
    assert len(jobs) >= 2
    job_spans: dict[str, tracing.TraceContext] = {}
    for rec in jobs:
        span = traces.job_span(rec)
        assert span is not None
        # Each job is a child of the generation's span, in its trace.
        assert (span.trace_id, span.parent_id) == (generation.trace_id, generation.span_id)
        job_spans[rec.job_id] = span

    seen: set[str] = set()
    for event, headers in await headed_events(cluster):
        job_id: Any = event.data.get("job_id")
        if event.type in GENERATION_EVENTS:
            span = tracing.from_headers(headers, "test")
            assert span is not None and span.span_id == generation.span_id, event.type
            seen.add(event.type)
        elif job_id in job_spans:
            span = tracing.from_headers(headers, "test")
            assert span is not None and span.trace_id == generation.trace_id, event.type
            seen.add(event.type)
    assert seen >= GENERATION_EVENTS
    assert {"JOB_SUBMITTED", "JOB_STARTED", "JOB_COMPLETED"} <= seen

    # The generation's root span and its events reached the OTLP receiver.
    assert coordinator.spans is not None
    await anyio.to_thread.run_sync(coordinator.spans.flush)

    def exported() -> list[Any] | None:
        mine = [s for s in receiver.spans if s.trace_id.hex() == generation.trace_id]
        return mine if any(s.span_id.hex() == generation.span_id for s in mine) else None

    spans = await eventually(exported, timeout=30, what="the generation's span exported")
    (root,) = [s for s in spans if s.span_id.hex() == generation.span_id]
    assert root.name == f"generation {GAME} 1" and not root.parent_span_id
    names = {s.name for s in spans}
    assert {"TRAINING_STARTED", "MODEL_PROMOTED"} <= names
