"""Pure parts of the status metrics collector: summaries, totals and health judgement."""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from shared.codec import encode
from shared.contracts import ClusterMetrics, InstanceSrvStats, ServiceMetrics
from shared.srv import SrvStats

#: ServiceMetrics fields summed into ClusterMetrics.totals (and exported per instance).
NUMERIC_FIELDS = (
    "uptime_s",
    "rss_bytes",
    "cpu_seconds",
    "handled",
    "invalid",
    "handler_errors",
    "events_emitted",
    "events_acked",
    "events_dropped",
    "events_pending",
)


def instance_key(service: str, instance: str) -> str:
    """How one instance is named in a round's results: ``service/instance``."""
    return f"{service}/{instance}"


def ours(stats: SrvStats, prefix: str) -> bool:
    """Whether a ``$SRV.STATS`` reply comes from an instance of this cluster."""
    return (stats.metadata or {}).get("prefix") == prefix


def srv_summary(stats: SrvStats) -> InstanceSrvStats:
    """Requests and errors of one instance, summed over its endpoints."""
    return InstanceSrvStats(
        service=stats.name,
        instance=stats.id,
        requests=sum(e.num_requests for e in stats.endpoints),
        errors=sum(e.num_errors for e in stats.endpoints),
        endpoints=len(stats.endpoints),
    )


def totals(metrics: Iterable[ServiceMetrics]) -> dict[str, float]:
    """The numeric fields summed over the instances that answered, plus their count."""
    sums = dict.fromkeys(NUMERIC_FIELDS, 0.0)
    count = 0
    for m in metrics:
        count += 1
        for name in NUMERIC_FIELDS:
            sums[name] += float(getattr(m, name))
    return {"instances": float(count), **sums}


def round_problem(succeeded: int, timed_out: int, failed: int, max_ratio: float) -> str:
    """Why the last round makes the collector DEGRADED; empty when it does not.

    A round with no calls (nothing discovered yet) is not a problem of the collector.
    """
    calls = succeeded + timed_out + failed
    if calls == 0:
        return ""
    bad = timed_out + failed
    if bad / calls > max_ratio:
        return (
            f"{bad} of {calls} metrics calls in the last round did not answer "
            f"({timed_out} timed out, {failed} failed; limit {max_ratio:.0%})"
        )
    return ""


def fit(cluster: ClusterMetrics, max_payload: int) -> tuple[bytes, bool]:
    """``cluster`` encoded, without histograms if whole it passes ``max_payload``.

    Histograms are most of a big round; the collector's Prometheus endpoint keeps them
    from memory. The flag says whether they were left out.
    """
    data = encode(cluster)
    if len(data) <= max_payload:
        return data, False
    bare = [msgspec.structs.replace(m, histograms=[]) for m in cluster.instances]
    return encode(msgspec.structs.replace(cluster, instances=bare)), True
