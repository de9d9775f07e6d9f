"""The status metrics collector on a real nats-server: rounds, Prometheus, timeouts."""

from __future__ import annotations

import urllib.error
import urllib.request

import anyio
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from prometheus_client.parser import text_string_to_metric_families

from services.status_metrics_collector.service import StatusMetricsCollectorService
from shared.codec import decode, encode
from shared.config import BaseConfig
from shared.contracts import ClusterMetrics, Empty, Event, ServiceStatus
from shared.service import Service
from shared.subjects import Subjects
from shared.testing.fixtures import ServiceFactory, service_config
from shared.testing.helpers import eventually, stream_events

pytestmark = pytest.mark.anyio

FAST = {"collect_interval": 0.2, "prometheus_port": 0}


class DemoA(Service[BaseConfig]):
    """A tiny service with one custom metric."""

    name = "demo_a"
    description = "demo A"

    def custom_metrics(self) -> dict[str, float]:
        return {"widgets": 42.0}


class DemoB(Service[BaseConfig]):
    """Another tiny service with another custom metric."""

    name = "demo_b"
    description = "demo B"

    def custom_metrics(self) -> dict[str, float]:
        return {"gadgets": 7.5}


async def cluster_metrics(nc: Client, prefix: str) -> list[ClusterMetrics]:
    """Subscribe to ``P.metrics.cluster``; the list fills as rounds are published."""
    seen: list[ClusterMetrics] = []

    async def on_msg(msg: Msg) -> None:
        seen.append(decode(ClusterMetrics, msg.data))

    await nc.subscribe(Subjects(prefix).metrics_cluster, cb=on_msg)
    return seen


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text: str = resp.read().decode()
        return text


async def test_round_lists_every_instance_with_custom_metrics(
    start_service: ServiceFactory, nc: Client, prefix: str
) -> None:
    seen = await cluster_metrics(nc, prefix)
    a = await start_service(DemoA)
    b = await start_service(DemoB)
    collector = await start_service(StatusMetricsCollectorService, **FAST)

    def complete() -> ClusterMetrics | None:
        return next((m for m in reversed(seen) if m.succeeded == 3), None)

    cm = await eventually(complete, what="a round with all three instances")
    by_instance = {m.instance: m for m in cm.instances}
    assert by_instance[a.instance].service == "demo_a"
    assert by_instance[a.instance].custom == {"widgets": 42.0}
    assert by_instance[b.instance].custom == {"gadgets": 7.5}
    assert collector.instance in by_instance
    assert (cm.prefix, cm.collector, cm.timed_out, cm.failed) == (prefix, collector.instance, 0, 0)
    assert cm.totals["instances"] == 3 and cm.totals["rss_bytes"] > 0
    srv = {s.instance: s for s in cm.srv_stats}
    assert {a.instance, b.instance, collector.instance} <= srv.keys()
    assert srv[collector.instance].endpoints == 2  # metrics-instance and latest
    health = collector.health_check()
    assert health.status is ServiceStatus.RUNNING
    assert health.details["collector"]["successes"] >= 3

    reply = await nc.request(
        Subjects(prefix).api(collector.name, "latest"), encode(Empty()), timeout=2
    )
    latest = decode(ClusterMetrics, reply.data)
    assert {m.instance for m in latest.instances} >= {a.instance, b.instance}


async def test_prometheus_endpoint_serves_instance_labels(
    nats_url: str, start_service: ServiceFactory, prefix: str
) -> None:
    a = await start_service(DemoA)
    svc = StatusMetricsCollectorService(
        service_config(StatusMetricsCollectorService, nats_url, prefix, **FAST)
    )
    async with svc.running():
        port = svc.prometheus_port
        assert port

        async def labelled() -> str | None:
            text = await anyio.to_thread.run_sync(scrape, port)
            return text if f'instance="{a.instance}"' in text else None

        text = await eventually(labelled, what="demo instance in /metrics")
        samples = {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }
        labels = (("instance", a.instance), ("service", "demo_a"))
        assert samples[("ringmaster_instance_up", labels)] == 1.0
        # A custom metric is a family of its own, named after its service.
        assert samples[("ringmaster_demo_a_widgets", labels[:1])] == 42.0
        assert samples[("ringmaster_instance_rss_bytes", labels)] > 0
        assert samples[("ringmaster_collector_calls_total", (("outcome", "success"),))] >= 1
        assert samples[("ringmaster_collector_rounds_total", ())] >= 1
    # Stopped with the service: nothing listens on the port any more.
    with pytest.raises(urllib.error.URLError):
        await anyio.to_thread.run_sync(scrape, port)


async def test_stalled_instance_counts_timeouts_and_degrades(
    start_service: ServiceFactory, nc: Client, prefix: str
) -> None:
    """A fake instance of this cluster is discoverable but never answers ``metrics``."""
    subjects = Subjects(prefix)
    stats_reply = encode(
        {
            "type": "io.nats.micro.v1.stats_response",
            "name": "ghost",
            "id": "ghost-1",
            "version": "0.0.1",
            "started": "2026-01-01T00:00:00.000Z",
            "metadata": {"prefix": prefix},
            "endpoints": [],
        }
    )
    asked: list[str] = []

    async def answer_stats(msg: Msg) -> None:
        await msg.respond(stats_reply)

    async def garbage_stats(msg: Msg) -> None:
        await msg.respond(b"not json")

    async def never_answer(msg: Msg) -> None:
        asked.append(msg.subject)  # and no reply: the call must time out

    ghost_subs = [
        await nc.subscribe("$SRV.STATS", cb=answer_stats),
        await nc.subscribe("$SRV.STATS", cb=garbage_stats),
        await nc.subscribe(subjects.instance_api("ghost", "ghost-1", "metrics"), cb=never_answer),
    ]
    seen = await cluster_metrics(nc, prefix)
    demo = await start_service(DemoA)
    collector = await start_service(StatusMetricsCollectorService, call_timeout=0.3, **FAST)

    health = await eventually(
        lambda: (h := collector.health_check()).status is ServiceStatus.DEGRADED and h,
        what="DEGRADED from the stalled instance",
    )
    assert "timed out" in health.message
    assert health.details["last_round"]["timeouts"] == ["ghost/ghost-1"]
    assert health.details["collector"]["timeouts"] >= 1
    assert health.details["collector"]["discover_errors"] >= 1
    assert asked
    cm = await eventually(
        lambda: next((m for m in seen if m.timed_out), None),
        what="a published round with a timeout",
    )
    assert cm.timeouts == ["ghost/ghost-1"]
    assert demo.instance in {m.instance for m in cm.instances}
    assert "ghost-1" in {s.instance for s in cm.srv_stats}

    async def collected_events() -> list[Event]:
        events = await stream_events(nc, f"{prefix}_EVENTS")
        return [e for e in events if e.type == "METRICS_COLLECTED"]

    (first, *_) = await eventually(collected_events, what="METRICS_COLLECTED")
    assert first.data["timed_out"] == 1

    # The ghost leaves; the next full round brings the collector back to RUNNING.
    for sub in ghost_subs:
        await sub.unsubscribe()
    await eventually(
        lambda: collector.health_check().status is ServiceStatus.RUNNING,
        what="RUNNING again once the stalled instance is gone",
    )
