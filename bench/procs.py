"""The service processes a benchmark runs, and how it talks to them.

Shared by the benchmark scripts (each ``bench_<name>.py`` is a script only): the
environment of a bench child, starting job managers, a node selector and node agents,
waiting for an orchestrator's ``metrics`` or for nodes to be alive, submitting a job,
a nats-server with its monitoring port, and CPU seconds per process.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import anyio
import msgspec
import nats
import psutil
from nats.aio.client import Client

from bench.harness import Ctx, Proc
from shared.cluster import service_env
from shared.codec import decode, encode
from shared.contracts import ServiceMetrics
from shared.embedded import EmbeddedServer, free_port
from shared.intake import ERROR_CODE_HEADER, ERROR_HEADER
from shared.jobs import JobSpec, NodeList
from shared.subjects import Subjects


class _Submitted(msgspec.Struct):
    """The part of the submit reply the bench reads."""

    job_id: str


def env(service: str, url: str, prefix: str, instance: str, **extra: object) -> dict[str, str]:
    """``RINGMASTER_<SERVICE>_*`` for one bench child (warnings only in its log)."""
    base = {"nats_url": url, "prefix": prefix, "instance": instance, "log_level": "WARNING"}
    return service_env(service, {**base, **extra})


def orchestrator_env(url: str, prefix: str, instance: str, **extra: str) -> dict[str, str]:
    """Environment configuring ``python -m services.orchestrator`` (HTTP off)."""
    values = {
        "RINGMASTER_ORCHESTRATOR_NATS_URL": url,
        "RINGMASTER_ORCHESTRATOR_PREFIX": prefix,
        "RINGMASTER_ORCHESTRATOR_INSTANCE": instance,
        "RINGMASTER_ORCHESTRATOR_HTTP_PORT": "-1",
        "RINGMASTER_ORCHESTRATOR_LOG_LEVEL": "WARNING",
    }
    values.update({f"RINGMASTER_ORCHESTRATOR_{k.upper()}": v for k, v in extra.items()})
    return values


async def metrics(nc: Client, prefix: str, instance: str, timeout: float = 2.0) -> ServiceMetrics:
    """One orchestrator instance's ``metrics`` reply."""
    subject = Subjects(prefix).instance_api("orchestrator", instance, "metrics")
    reply = await nc.request(subject, b"{}", timeout=timeout)
    return decode(ServiceMetrics, reply.data)


async def wait_metrics(nc: Client, proc: Proc, prefix: str, instance: str) -> ServiceMetrics:
    """Wait until the orchestrator answers its ``metrics`` endpoint."""
    deadline = time.monotonic() + 20
    while True:
        if not proc.alive():
            raise RuntimeError(f"orchestrator exited:\n{proc.tail()}")
        try:
            return await metrics(nc, prefix, instance, timeout=0.5)
        except (TimeoutError, nats.errors.Error):
            if time.monotonic() > deadline:
                raise TimeoutError(f"orchestrator not answering:\n{proc.tail()}") from None
            await anyio.sleep(0.1)


def start_agent(ctx: Ctx, url: str, prefix: str, node_id: str, **extra: object) -> Proc:
    """``python -m services.node_agent`` as node ``node_id`` (floors low: a shared disk)."""
    values = {"node_id": node_id, "min_free_disk_mb": 1, "min_memory_mb": 1, **extra}
    return ctx.python(
        f"agent-{node_id}",
        ["-m", "services.node_agent"],
        env("node_agent", url, prefix, f"agent-{node_id}", **values),
    )


def manager_instance(n: int) -> str:
    """The instance name of the ``n``-th job manager :func:`start_managers` starts."""
    return f"jm-{n}"


def start_managers(ctx: Ctx, url: str, prefix: str, managers: int = 1) -> list[Proc]:
    """``managers`` job managers (``job_manager``, ``job_manager-1`` ...) and the selector."""
    procs = [
        ctx.python(
            "job_manager" if n == 0 else f"job_manager-{n}",
            ["-m", "services.job_manager"],
            env("job_manager", url, prefix, manager_instance(n)),
        )
        for n in range(managers)
    ]
    procs.append(
        ctx.python(
            "node_selector",
            ["-m", "services.node_selector"],
            env("node_selector", url, prefix, "sel-0"),
        )
    )
    return procs


async def nodes_alive(
    nc: Client, subjects: Subjects, want: Callable[[set[str]], bool], procs: list[Proc]
) -> set[str]:
    """Poll the selector's ``nodes`` until ``want(alive node ids)``; those ids."""
    deadline = time.monotonic() + 60
    while True:
        for proc in procs:
            if not proc.alive():
                raise RuntimeError(f"{proc.name} exited:\n{proc.tail()}")
        try:
            reply = await nc.request(subjects.api("node_selector", "nodes"), b"{}", timeout=2)
            alive = {v.info.node_id for v in decode(NodeList, reply.data).nodes if v.alive}
            if want(alive):
                return alive
        except (TimeoutError, nats.errors.Error, msgspec.DecodeError):
            pass  # not up yet: poll again
        if time.monotonic() > deadline:
            raise TimeoutError(f"nodes not alive in time:\n{procs[-1].tail()}")
        await anyio.sleep(0.2)


async def submit(nc: Client, subjects: Subjects, spec: JobSpec, timeout: float = 30.0) -> str:
    """Submit ``spec``; its job_id (raises on an error reply)."""
    reply = await nc.request(subjects.api("job_manager", "submit"), encode(spec), timeout=timeout)
    headers = reply.headers or {}
    if ERROR_CODE_HEADER in headers:
        raise RuntimeError(f"submit refused: {headers[ERROR_CODE_HEADER]} {headers[ERROR_HEADER]}")
    return decode(_Submitted, reply.data).job_id


def monitored_server(ctx: Ctx, name: str = "bench-jobs") -> tuple[EmbeddedServer, int]:
    """As ``ctx.server()``, with the monitoring port on (for message counts)."""
    port, http = free_port(), free_port()
    server = EmbeddedServer(
        port=port,
        store_dir=ctx.dir / "nats",
        server_name=name,
        http_port=http,
        log_file=ctx.dir / "nats.log",
    )
    ctx.servers.append(server)  # stopped by ctx.close() whatever happens
    server.start()
    return server, http


def varz(port: int) -> tuple[int, int]:
    """The server's in_msgs and out_msgs so far (monitoring endpoint)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/varz", timeout=5) as reply:
        data = json.load(reply)
    return int(data["in_msgs"]), int(data["out_msgs"])


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """User + system CPU seconds of each named process so far."""
    out: dict[str, float] = {}
    for name, pid in pids.items():
        times = psutil.Process(pid).cpu_times()
        out[name] = times.user + times.system
    return out


def per_job_ms(before: dict[str, float], after: dict[str, float], jobs: int) -> dict[str, float]:
    """CPU milliseconds per job of each process over a round."""
    return {k: (after[k] - before[k]) * 1000 / jobs for k in before}


async def health_details(nc: Client, subjects: Subjects, service: str, instance: str) -> Any:
    """The ``details`` of one instance's health reply on its control subject."""
    reply = await nc.request(subjects.ctl(service, instance), b'{"command": "health"}', 5)
    return json.loads(reply.data)["health"]["details"]
