"""A successful ``reload``: a field changed in the config file takes effect in place.

Each service reads its config file through ``load_config`` (the path ``ringmaster
service`` takes), the file is rewritten, ``ringmaster ctl <service> reload`` is sent,
and the service then acts on the new value without a restart.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, TypeVar

import anyio
import msgspec
import pytest
from nats.aio.client import Client

from services.job_manager.service import JobManagerService
from services.sync_planner.service import SyncPlannerService
from shared.blobs import BlobStore, ensure_store
from shared.cli import main
from shared.codec import decode, encode
from shared.config import load_config
from shared.jobs import JobRecord, JobRef, JobSpec, JobState, Requirements
from shared.service import Service
from shared.subjects import Subjects
from shared.testing.fixtures import service_config
from shared.testing.helpers import eventually
from shared.training import PrefetchRequest

pytestmark = pytest.mark.anyio

Svc = TypeVar("Svc", bound=Service[Any])
#: What service_config sets, the fields every test config file carries.
BASE_FIELDS = (
    "nats_url",
    "prefix",
    "instance",
    "beacon_interval",
    "connect_timeout",
    "shutdown_timeout",
    "events_max_bytes",
)


class ConfigFile:
    """A service's TOML config file, rewritten by the test."""

    def __init__(self, path: Path, cls: type[Service[Any]], nats_url: str, prefix: str) -> None:
        self.path, self.cls = path, cls
        base = msgspec.to_builtins(service_config(cls, nats_url, prefix))
        self.fields: dict[str, Any] = {name: base[name] for name in BASE_FIELDS}

    def write(self, **fields: Any) -> None:
        self.fields.update(fields)
        self.path.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in self.fields.items()))

    def load(self) -> Any:
        return load_config(self.cls.config_type, self.cls.name, ["--config", str(self.path)], {})


@pytest.fixture
async def stack(prefix: str) -> AsyncIterator[AsyncExitStack]:
    """Services started here stop before the prefix is deleted."""
    async with AsyncExitStack() as services:
        yield services


async def start_from_file(
    stack: AsyncExitStack, cls: type[Svc], file: ConfigFile, **fields: Any
) -> Svc:
    file.write(**fields)
    return await stack.enter_async_context(cls(file.load(), reload_config=file.load).running())


async def reload(service: Service[Any], nats_url: str, prefix: str) -> None:
    argv = ["ctl", service.name, "reload", "--nats-url", nats_url, "--prefix", prefix]
    argv += ["--instance", service.instance]
    assert await anyio.to_thread.run_sync(main, argv) == 0


async def request(nc: Client, prefix: str, service: str, method: str, body: object) -> bytes:
    reply = await nc.request(Subjects(prefix).api(service, method), encode(body), timeout=5)
    return reply.data


async def test_job_manager_reload_shortens_the_dispatch_timeout(
    stack: AsyncExitStack, nc: Client, nats_url: str, prefix: str, tmp_path: Path
) -> None:
    file = ConfigFile(tmp_path / "job_manager.toml", JobManagerService, nats_url, prefix)
    jm = await start_from_file(
        stack, JobManagerService, file, dispatch_timeout_s=600.0, reaper_interval=0.2
    )
    # Pinned to a node that never takes it: only the dispatch timeout can end it.
    spec = JobSpec(
        type="shell", requirements=Requirements(capability="cpu", node_id="absent"), max_attempts=1
    )
    job = decode(JobRecord, await request(nc, prefix, "job_manager", "submit", spec))

    async def state() -> JobRecord:
        ref = JobRef(job_id=job.job_id)
        return decode(JobRecord, await request(nc, prefix, "job_manager", "get", ref))

    assert (await eventually(state)).state is JobState.DISPATCHED

    file.write(dispatch_timeout_s=0.5)
    await reload(jm, nats_url, prefix)

    assert jm.config.dispatch_timeout_s == 0.5
    failed = await eventually(
        lambda: _if(state(), lambda r: r.state is JobState.FAILED), what="the job timed out"
    )
    assert failed.error == "not started"


async def test_sync_planner_reload_changes_the_prefetch_jobs_it_submits(
    stack: AsyncExitStack, nc: Client, nats_url: str, prefix: str, tmp_path: Path
) -> None:
    jm_file = ConfigFile(tmp_path / "job_manager.toml", JobManagerService, nats_url, prefix)
    await start_from_file(stack, JobManagerService, jm_file, dispatch_timeout_s=600.0)
    file = ConfigFile(tmp_path / "sync_planner.toml", SyncPlannerService, nats_url, prefix)
    planner = await start_from_file(
        stack, SyncPlannerService, file, prefetch_max_attempts=3, retention_interval_s=3600.0
    )
    blobs = BlobStore(await ensure_store(nc.jetstream(), Subjects(prefix).data_store))
    ref = await blobs.put_bytes("data.npz", b"games")

    async def prefetch(node: str) -> JobSpec:
        body = PrefetchRequest(game="3x3k3", node_id=node, refs=[ref])
        return decode(JobRecord, await request(nc, prefix, "sync_planner", "prefetch", body)).spec

    assert (await prefetch("n1")).max_attempts == 3

    file.write(prefetch_max_attempts=7, prefetch_timeout_s=42.0)
    await reload(planner, nats_url, prefix)

    spec = await prefetch("n2")
    assert (spec.max_attempts, spec.timeout_s) == (7, 42.0)


async def _if(record: Any, test: Callable[[JobRecord], bool]) -> JobRecord | None:
    value: JobRecord = await record
    return value if test(value) else None
