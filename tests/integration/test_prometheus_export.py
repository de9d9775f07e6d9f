"""What ``/metrics`` exports, scraped from a real collector over a small real cluster.

A job manager runs one job through an agent stand-in (so its histograms have data), a
node publishes NodeInfo with a GPU, an orchestrator and a training coordinator run for
their series. The scrape is parsed with prometheus-client's own text parser; then every
expression of the shipped alert rules and Grafana dashboard is checked against it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml
from nats.aio.client import Client
from prometheus_client.parser import text_string_to_metric_families

from services.job_manager.service import JobManagerService
from services.orchestrator.service import OrchestratorService
from services.status_metrics_collector.service import StatusMetricsCollectorService
from services.training_coordinator.service import TrainingCoordinatorService
from shared.codec import encode
from shared.jobs import JobRecord, JobResult, JobSpec, Requirements
from shared.subjects import Subjects
from shared.testing.builders import node_info
from shared.testing.fixtures import ServiceFactory
from shared.testing.helpers import eventually
from tests.integration.test_job_manager import StandIn, ok
from tests.integration.test_status_metrics_collector import scrape

pytestmark = pytest.mark.anyio

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "monitoring"
HISTOGRAMS = (
    "ringmaster_job_submit_to_running_seconds",
    "ringmaster_job_queue_wait_seconds",
    "ringmaster_job_duration_seconds",
    "ringmaster_event_publish_seconds",
)
_NAME = re.compile(r"\bringmaster_[a-zA-Z0-9_]+")
_SUFFIXES = ("_bucket", "_count", "_sum")


def expressions() -> list[str]:
    """Every PromQL expression of the alert rules and of the dashboard's panels."""
    rules = yaml.safe_load((DEPLOY / "alerts.yml").read_text())
    found = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    found += [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    return found


def exported_names(types: dict[str, str]) -> set[str]:
    """The sample names a scrape holds, as PromQL sees them (suffixes included)."""
    names = set()
    for family, kind in types.items():
        if kind == "counter":
            names.add(family + "_total")
        elif kind == "histogram":
            names.update(family + s for s in _SUFFIXES)
        else:
            names.add(family)
    return names


async def test_metrics_export_histograms_counters_and_what_the_rules_name(
    start_service: ServiceFactory, nc: Client, prefix: str
) -> None:
    await start_service(JobManagerService)
    await start_service(OrchestratorService, http_port=-1, beacon_interval=0.2)
    await start_service(TrainingCoordinatorService, games=["tictactoe"], interval_s=0.5)
    collector = await start_service(
        StatusMetricsCollectorService, collect_interval=0.2, prometheus_port=0
    )
    port = collector.prometheus_port
    assert port
    gpu_node = node_info("gpu-node-1", gpus=("A100",), gpu_memory_mb=40_000)
    await nc.publish(Subjects(prefix).node("gpu-node-1"), encode(gpu_node))

    stand_in = StandIn(nc, prefix, "cap.hist")
    async with stand_in.pulling():
        spec = JobSpec(type="hist", requirements=Requirements(capability="hist", pooled=True))
        await ok(nc, prefix, "submit", spec, JobRecord)
        await stand_in.run_one(JobResult(result={"ok": True}))

    async def complete() -> dict[str, Any] | None:
        await nc.publish(Subjects(prefix).node("gpu-node-1"), encode(gpu_node))
        text = await anyio.to_thread.run_sync(scrape, port)
        families = {f.name: f for f in text_string_to_metric_families(text)}
        wanted = [*HISTOGRAMS, "ringmaster_node_gpu_utilization_ratio"]
        wanted += [
            "ringmaster_training_coordinator_promotions",
            "ringmaster_orchestrator_instances_lost",
        ]
        if all(families.get(n) and families[n].samples for n in wanted):
            return families
        return None

    families = await eventually(complete, timeout=30, what="histograms and GPU series")
    types = {name: f.type for name, f in families.items()}
    for name in HISTOGRAMS:
        assert types[name] == "histogram", name
    (done,) = [
        s
        for s in families["ringmaster_job_duration_seconds"].samples
        if s.name.endswith("_count") and s.labels.get("type") == "hist"
    ]
    assert done.value == 1 and done.labels["outcome"] == "completed"
    # Counters are counters, durations seconds; no gauge is named like a counter.
    assert types["ringmaster_job_manager_jobs_completed"] == "counter"
    assert types["ringmaster_instance_cpu_seconds"] == "counter"
    assert types["ringmaster_instance_uptime_seconds"] == "gauge"
    assert "ringmaster_instance_custom" not in types  # one family per metric now
    for name, kind in types.items():
        if kind == "gauge":
            assert not name.endswith(("_total", "_count", "_sum", "_bucket")), name
    (gpu,) = families["ringmaster_node_gpu_memory_total_bytes"].samples
    assert gpu.labels["node"] == "gpu-node-1" and gpu.value == 40_000 * 1024 * 1024

    exported = exported_names(types)
    for expr in expressions():
        missing = set(_NAME.findall(expr)) - exported
        assert not missing, f"{expr!r} names metrics /metrics does not export: {missing}"
