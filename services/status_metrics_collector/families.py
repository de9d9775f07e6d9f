"""Prometheus metric families built from one collection round and the latest NodeInfo.

Naming follows Prometheus practice: one family per metric, monotonic counts are
counters named ``*_total``, durations are ``*_seconds``, sizes ``*_bytes``. A custom
metric of a service becomes its own family ``ringmaster_<service>_<name>`` (a counter
when its name ends in ``_total``, else a gauge) labelled by instance. Histograms are
relayed as the services observed them (cumulative buckets, sum, count).
"""

from __future__ import annotations

import math
import re
import time
from collections import Counter
from collections.abc import Iterable, Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from shared.contracts import ClusterMetrics, HistogramSample, ServiceMetrics
from shared.jobs import NodeInfo

_LABELS = ["service", "instance"]
_INVALID = re.compile(r"[^a-zA-Z0-9_]")

#: ServiceMetrics fields: (family name, help, counter?).
FIELDS: dict[str, tuple[str, str, bool]] = {
    "uptime_s": ("ringmaster_instance_uptime_seconds", "seconds since the instance started", False),
    "rss_bytes": ("ringmaster_instance_rss_bytes", "resident memory", False),
    "cpu_seconds": ("ringmaster_instance_cpu_seconds_total", "CPU time used", True),
    "handled": ("ringmaster_instance_handled_total", "messages and requests handled", True),
    "invalid": ("ringmaster_instance_invalid_total", "messages that did not decode", True),
    "handler_errors": ("ringmaster_instance_handler_errors_total", "handler failures", True),
    "events_emitted": ("ringmaster_instance_events_emitted_total", "events emitted", True),
    "events_acked": ("ringmaster_instance_events_acked_total", "events acknowledged", True),
    "events_dropped": ("ringmaster_instance_events_dropped_total", "events dropped", True),
    "events_pending": ("ringmaster_instance_events_pending", "events not yet acknowledged", False),
}


def metric_name(service: str, name: str) -> str:
    """The family name of custom metric ``name`` of ``service``."""
    return _INVALID.sub("_", f"ringmaster_{service}_{name}")


def instance_families(latest: ClusterMetrics, problems: Counter[str]) -> Iterator[Metric]:
    """Per-instance fields, custom metrics and histograms of one round."""
    for field, (name, help_, counter) in FIELDS.items():
        family = (CounterMetricFamily if counter else GaugeMetricFamily)(
            name, help_, labels=_LABELS
        )
        for m in latest.instances:
            family.add_metric([m.service, m.instance], float(getattr(m, field)))
        yield family
    yield from _custom(latest.instances, problems)
    yield from histogram_families(
        ((m, h) for m in latest.instances for h in m.histograms), problems
    )


def _custom(instances: list[ServiceMetrics], problems: Counter[str]) -> Iterator[Metric]:
    families: dict[str, CounterMetricFamily | GaugeMetricFamily] = {}
    for m in instances:
        for raw, value in sorted(m.custom.items()):
            counter = raw.endswith("_total")
            name = metric_name(m.service, raw)
            base = name[: -len("_total")] if counter else name
            family = families.get(base)
            if family is None:
                help_ = f"{m.service} custom metric {raw}"
                family = (CounterMetricFamily if counter else GaugeMetricFamily)(
                    base, help_, labels=["instance"]
                )
                families[base] = family
            elif (family.type == "counter") != counter:
                problems["custom_name_clashes"] += 1  # a gauge and a counter of one name
                continue
            family.add_metric([m.instance], value)
    yield from families.values()


def histogram_families(
    samples: Iterable[tuple[ServiceMetrics, HistogramSample]], problems: Counter[str]
) -> Iterator[Metric]:
    """One histogram family per name, a series per instance and label set."""
    families: dict[str, tuple[HistogramMetricFamily, list[str]]] = {}
    for m, h in samples:
        keys = sorted(h.labels)
        if len(h.counts) != len(h.bounds) or not _valid_name(h.name):
            problems["bad_histograms"] += 1
            continue
        entry = families.get(h.name)
        if entry is None:
            family = HistogramMetricFamily(h.name, h.help or h.name, labels=[*_LABELS, *keys])
            entry = families[h.name] = (family, keys)
        family, expected = entry
        if keys != expected:
            problems["bad_histograms"] += 1  # one family, one label set
            continue
        buckets = [(_le(b), float(c)) for b, c in zip(h.bounds, h.counts, strict=True)]
        buckets.append(("+Inf", float(h.count)))
        family.add_metric(
            [m.service, m.instance, *(h.labels[k] for k in keys)], buckets, sum_value=h.sum
        )
    yield from (family for family, _ in families.values())


def _le(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(float(bound))


def _valid_name(name: str) -> bool:
    return bool(name) and not _INVALID.search(name) and not name[0].isdigit()


def node_families(nodes: Iterable[NodeInfo]) -> Iterator[Metric]:
    """Slots and per-GPU utilization and memory of each node, from its latest NodeInfo."""
    slots = GaugeMetricFamily("ringmaster_node_slots", "job slots of the node", labels=["node"])
    free = GaugeMetricFamily("ringmaster_node_free_slots", "free job slots", labels=["node"])
    gpu_labels = ["node", "gpu", "model"]
    util = GaugeMetricFamily(
        "ringmaster_node_gpu_utilization_ratio", "GPU busy share (0-1)", labels=gpu_labels
    )
    used = GaugeMetricFamily(
        "ringmaster_node_gpu_memory_used_bytes", "GPU memory in use", labels=gpu_labels
    )
    total = GaugeMetricFamily(
        "ringmaster_node_gpu_memory_total_bytes", "GPU memory", labels=gpu_labels
    )
    for info in nodes:
        slots.add_metric([info.node_id], info.slots)
        free.add_metric([info.node_id], info.free_slots)
        for gpu in info.gpus:
            labels = [info.node_id, str(gpu.index), gpu.name]
            util.add_metric(labels, gpu.utilization_pct / 100.0)
            used.add_metric(labels, gpu.memory_used_mb * 1024 * 1024)
            total.add_metric(labels, gpu.memory_total_mb * 1024 * 1024)
    yield from (slots, free, util, used, total)


class NodeTable:
    """The latest NodeInfo of each node, forgotten after ten silent intervals."""

    def __init__(self) -> None:
        self.latest: dict[str, tuple[NodeInfo, float]] = {}

    def observe(self, info: NodeInfo) -> None:
        """Keep ``info`` as its node's latest."""
        self.latest[info.node_id] = (info, time.monotonic())

    def live(self) -> tuple[NodeInfo, ...]:
        """Nodes heard from recently, by node id (the silent ones are dropped)."""
        now = time.monotonic()
        for node_id, (info, seen) in list(self.latest.items()):
            if now - seen > 10 * max(info.interval_s, 1.0):
                del self.latest[node_id]
        return tuple(info for info, _ in sorted(self.latest.values(), key=lambda n: n[0].node_id))
