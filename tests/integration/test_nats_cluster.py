"""Three clustered nats-servers, R3 streams and buckets; one server dies mid-run.

The servers run ``deploy/nats/cluster.conf`` with the generated permissions; every
service runs with its own credentials and ``replicas = 3``, and each is given the
URL of one server only (it learns the others from the cluster, as in a
deployment). Jobs are in flight and KV records being written when one server is
killed with SIGKILL: every job still completes, every event and record is there
afterwards, and every service reconnects, never stops, and is RUNNING again once
its health window has passed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import msgspec
import nats
import pytest
from nats.aio.client import Client
from nats.js.api import KeyValueConfig

from services.job_manager.service import JobManagerService
from services.node_agent.service import NodeAgentService
from services.node_selector.service import NodeSelectorService
from services.state_manager.service import StateManagerService
from shared.codec import decode, encode
from shared.contracts import ServiceStatus
from shared.credentials import credential_options
from shared.jobs import JobRecord, JobSpec, JobState, Requirements
from shared.service import Service
from shared.subjects import Subjects
from shared.testing.bounds import WAIT, timeout_for
from shared.testing.cluster import NatsCluster, generate_auth
from shared.testing.fixtures import service_config
from shared.testing.helpers import eventually, stream_events
from shared.testing.server import new_prefix

#: Every job completed after the kill (leader elections and retries included).
COMPLETE_BOUND = 90.0
#: One JetStream read asked again until the restarted cluster answers it.
ANSWER_BOUND = 60.0

# The three servers healthy and routed, every job completed, every service RUNNING,
# and the reads afterwards (each bounded alone; two of them slow at most).
pytestmark = [
    pytest.mark.anyio,
    timeout_for(2 * WAIT, COMPLETE_BOUND, WAIT, ANSWER_BOUND, ANSWER_BOUND),
]

PREFIX = new_prefix()
S = Subjects(PREFIX)
JOBS_BEFORE, JOBS_DURING, RECORDS = 6, 6, 40
VICTIM = 1  # the server that dies: the job manager and one node agent use it


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    """Three routed servers of cluster.conf, with the generated users."""
    auth = generate_auth(PREFIX, tmp_path / "secrets")
    cluster = NatsCluster(tmp_path / "cluster", auth)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def job(i: int) -> JobSpec:
    """A short shell job any node agent may take."""
    return JobSpec(
        type="shell",
        args={"argv": ["sh", "-c", "sleep 0.5; echo done"]},
        requirements=Requirements(capability="shell", pooled=True),
        idempotency_key=f"job-{i}",
        max_attempts=5,
    )


async def submit(nc: Client, i: int) -> str:
    """Submit job ``i`` (retried while the cluster elects new leaders); its id."""
    for _ in range(30):
        try:
            reply = await nc.request(S.api("job_manager", "submit"), encode(job(i)), timeout=2)
            return decode(JobRecord, reply.data).job_id
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError, msgspec.DecodeError):
            await anyio.sleep(0.5)  # idempotency_key makes a repeated submit the same job
    raise AssertionError(f"job {i} could not be submitted")


async def test_one_server_dies_and_nothing_is_lost(cluster: NatsCluster, tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    urls = cluster.urls
    agent = {"capabilities": ["shell"], "slots": 2, "min_free_disk_mb": 1, "min_memory_mb": 1}
    plan: list[tuple[type[Service[Any]], int, dict[str, Any]]] = [
        (StateManagerService, 0, {}),
        (JobManagerService, VICTIM, {}),
        (NodeSelectorService, 2, {}),
        (NodeAgentService, VICTIM, {**agent, "node_id": "na", "work_dir": str(tmp_path / "na")}),
        (NodeAgentService, 2, {**agent, "node_id": "nb", "work_dir": str(tmp_path / "nb")}),
    ]
    operator = await nats.connect(
        urls[0], connect_timeout=5, **credential_options(str(secrets / "operator.user"))
    )
    statuses: list[tuple[str, ServiceStatus]] = []
    async with AsyncExitStack() as stack:
        stack.push_async_callback(operator.close)
        services: list[Service[Any]] = []
        for cls, server, extra in plan:
            cfg = service_config(
                cls,
                urls[server],
                PREFIX,
                replicas=3,
                # Requests that fail while stream leaders move count against health;
                # a short window lets it show the recovery within the test.
                health_window_s=5.0,
                credentials_file=str(secrets / f"{cls.name}.user"),
                **extra,
            )
            services.append(await stack.enter_async_context(cls(cfg).running()))
        js = operator.jetstream()
        kv = await js.create_key_value(KeyValueConfig(bucket=f"{PREFIX}_records", replicas=3))
        jobs_kv = await js.key_value(S.bucket("jobs"))

        async def watch_status() -> None:
            while True:
                for s in services:
                    health = s.health_check()
                    statuses.append((f"{s.instance}: {health.message}", s.effective_status(health)))
                await anyio.sleep(0.1)

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch_status)
            ids = [await submit(operator, i) for i in range(JOBS_BEFORE)]
            for i in range(RECORDS // 2):
                await kv.put(f"r{i}", str(i).encode())
            await anyio.sleep(0.3)  # jobs are running now
            cluster.servers[VICTIM].kill()
            for i in range(RECORDS // 2, RECORDS):
                for _ in range(30):  # the bucket's leader may be re-elected meanwhile
                    try:
                        await kv.put(f"r{i}", str(i).encode())
                        break
                    except nats.errors.Error:  # timeouts, no response, API errors
                        await anyio.sleep(0.5)
            ids += [
                await submit(operator, i) for i in range(JOBS_BEFORE, JOBS_BEFORE + JOBS_DURING)
            ]

            async def all_completed() -> bool:
                try:
                    for job_id in ids:
                        entry = await jobs_kv.get(job_id)
                        if decode(JobRecord, entry.value or b"").state != JobState.COMPLETED:
                            return False
                except nats.errors.Error:  # a read during a leader election: ask again
                    return False
                return True

            await eventually(
                all_completed, timeout=COMPLETE_BOUND, interval=0.5, what="every job completed"
            )
            await eventually(
                lambda: all(s.effective_status() == ServiceStatus.RUNNING for s in services),
                timeout=WAIT,
                what="every service RUNNING",
            )
            tg.cancel_scope.cancel()

        # Every service that used the dead server reconnected to another one.
        for service, (_, server, _) in zip(services, plan, strict=True):
            if server == VICTIM:
                assert service.bus_stats.reconnects >= 1, service.instance
        # No service stopped or restarted on the way. (Health may dip to DEGRADED or
        # ERROR while requests fail during the leader elections: that is health doing
        # its job, and it came back to RUNNING above.)
        stopped = (ServiceStatus.STOPPING, ServiceStatus.STOPPED)
        assert not {w for w, st in statuses if st in stopped}

        # The reads below are JetStream API requests too: one may time out while the
        # restarted server catches up, so each is asked again until it answers.
        async def answered(call: Callable[[], Awaitable[Any]]) -> Any:
            async def once() -> tuple[Any] | None:
                try:
                    return (await call(),)
                except nats.errors.Error:
                    return None

            return (await eventually(once, timeout=ANSWER_BOUND, interval=0.5, what="an answer"))[0]

        # No KV record lost, and the bucket is replicated three times.
        for i in range(RECORDS):
            entry = await answered(lambda i=i: kv.get(f"r{i}"))
            assert entry.value == str(i).encode()
        for stream in (S.events_stream, S.jobs_stream, S.kv_stream("jobs"), S.data_stream):
            info = await answered(lambda stream=stream: js.stream_info(stream))
            assert info.config.num_replicas == 3, stream

        # No event lost: each job's submission and completion are in the events stream.
        events = await answered(lambda: stream_events(operator, S.events_stream))
        for kind in ("JOB_SUBMITTED", "JOB_COMPLETED"):
            seen = {(e.data or {}).get("job_id") for e in events if e.type == kind}
            assert set(ids) <= seen, f"{kind} missing for {set(ids) - seen}"
    assert cluster.violations() == []
