"""``ringmaster watch --trace``: only the events of one trace, against a real nats-server."""

from __future__ import annotations

import pytest
from nats.aio.client import Client

from shared import tracing
from shared.codec import decode, encode
from shared.contracts import Event
from shared.events import JobStarted, build_event
from shared.testing.procs import Lines, spawn

pytestmark = pytest.mark.anyio


async def test_watch_trace_shows_only_that_traces_events(
    nats_url: str, prefix: str, nc: Client
) -> None:
    wanted, other = tracing.new_trace(), tracing.new_trace()
    argv = ["watch", "--json", "--trace", wanted.trace_id.upper(), "--count", "1"]
    async with spawn(*argv, "--nats-url", nats_url, "--prefix", prefix) as proc:
        err = Lines(proc.stderr)
        await err.until("watching")
        subject = f"{prefix}.event.job_manager.job.started"
        sent = [
            (other.event_headers(), "other"),
            ({tracing.TRACEPARENT: "00-garbage-01"}, "malformed"),
            (None, "untraced"),
            (wanted.child().event_headers(), "wanted"),
        ]
        for seq, (headers, job_id) in enumerate(sent, 1):
            data = JobStarted(job_id=job_id, type="shell", attempt=1, node_id="n1")
            event = build_event(prefix, "job_manager", "jm-1", seq, data)
            await nc.publish(subject, encode(event), headers=headers)
        await nc.flush()
        out = await Lines(proc.stdout).rest()
        assert await proc.wait() == 0
    assert [decode(Event, line.encode()).data["job_id"] for line in out] == ["wanted"]


async def test_watch_refuses_a_malformed_trace_id(nats_url: str, prefix: str) -> None:
    argv = ["watch", "--trace", "xyz", "--nats-url", nats_url, "--prefix", prefix]
    async with spawn(*argv) as proc:
        assert await proc.wait() == 2
        assert any("--trace" in line for line in await Lines(proc.stderr).rest())
