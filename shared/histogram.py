"""Bucketed histograms a service observes itself and carries in its metrics reply.

A service counts its own latencies (it is the one that sees both ends); the status
metrics collector only relays them to Prometheus as real histograms. Counts are kept
per bucket here and made cumulative when sampled, as Prometheus expects.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from shared.contracts import HistogramSample

#: Seconds, from a sub-millisecond event acknowledgment to an hour-long job.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
)

#: Seconds a job runs: a few seconds to several hours.
DURATION_BUCKETS: tuple[float, ...] = (1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400)


class _Series:
    __slots__ = ("buckets", "count", "sum")

    def __init__(self, size: int) -> None:
        self.buckets = [0] * (size + 1)  # the last one is +Inf
        self.sum = 0.0
        self.count = 0


class Histogram:
    """A histogram family: one series per label set, fixed bucket bounds."""

    def __init__(
        self,
        name: str,
        help: str,
        bounds: Sequence[float] = LATENCY_BUCKETS,
        labels: Sequence[str] = (),
    ) -> None:
        if list(bounds) != sorted(bounds) or not bounds:
            raise ValueError(f"histogram {name}: bounds must be non-empty and ascending")
        self.name = name
        self.help = help
        self.bounds = tuple(float(b) for b in bounds)
        self.labels = tuple(labels)
        self._series: dict[tuple[str, ...], _Series] = {}

    def observe(self, value: float, *label_values: str) -> None:
        """Count one observation (negative values, from clock skew, count as 0)."""
        if len(label_values) != len(self.labels):
            raise ValueError(f"histogram {self.name} takes labels {self.labels}")
        series = self._series.get(label_values)
        if series is None:
            series = self._series[label_values] = _Series(len(self.bounds))
        value = max(0.0, value)
        series.buckets[bisect.bisect_left(self.bounds, value)] += 1
        series.sum += value
        series.count += 1

    def samples(self) -> list[HistogramSample]:
        """Every series with cumulative bucket counts, for ServiceMetrics.histograms."""
        out = []
        for label_values, series in sorted(self._series.items()):
            cumulative, running = [], 0
            for n in series.buckets[:-1]:
                running += n
                cumulative.append(running)
            out.append(
                HistogramSample(
                    name=self.name,
                    help=self.help,
                    labels=dict(zip(self.labels, label_values, strict=True)),
                    bounds=list(self.bounds),
                    counts=cumulative,
                    sum=series.sum,
                    count=series.count,
                )
            )
        return out
