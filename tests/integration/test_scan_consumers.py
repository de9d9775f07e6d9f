"""A one-shot scan of a bucket leaves no consumer behind for long.

nats-py keeps a stopped watcher's consumer for 5 minutes; a ``list`` per request piled
them up until the server refused new consumers, and every watch of the bucket failed.
"""

from __future__ import annotations

import pytest
from nats.aio.client import Client

from services.job_manager.service import JobManagerService
from shared.codec import encode
from shared.jobs import JobQuery
from shared.subjects import Subjects
from shared.testing.fixtures import ServiceFactory
from shared.testing.helpers import eventually

pytestmark = pytest.mark.anyio


async def test_many_list_requests_leave_no_consumers_behind(
    start_service: ServiceFactory, nc: Client, prefix: str
) -> None:
    await start_service(JobManagerService)
    subjects = Subjects(prefix)
    stream = f"KV_{subjects.bucket('jobs')}"
    js = nc.jetstream()
    before = (await js.stream_info(stream)).state.consumer_count
    for _ in range(100):
        await nc.request(subjects.api("job_manager", "list"), encode(JobQuery()), timeout=5)

    async def settled() -> bool:
        return (await js.stream_info(stream)).state.consumer_count <= before

    await eventually(settled, timeout=30, interval=0.5, what="the scans' consumers to go")
