"""Pure parts of monitoring: histograms, list cursors and the shipped deploy/monitoring files."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest
import yaml

from services.job_manager.listing import decode_cursor, encode_cursor
from services.status_metrics_collector.families import histogram_families
from services.status_metrics_collector.policy import fit
from shared.codec import decode
from shared.contracts import ClusterMetrics, HistogramSample, ServiceMetrics, ServiceStatus
from shared.errors import BadRequest
from shared.histogram import Histogram

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "monitoring"
_DURATION = re.compile(r"^\d+[smhd]$")


def test_histogram_samples_are_cumulative_with_inf_in_count() -> None:
    h = Histogram("x_seconds", "x", bounds=(0.1, 1.0, 10.0), labels=("type",))
    for value in (0.05, 0.1, 0.5, 5.0, 50.0, -1.0):
        h.observe(value, "a")
    (sample,) = h.samples()
    assert sample.counts == [3, 4, 5] and sample.count == 6  # -1 counts as 0, 50 in +Inf
    assert sample.sum == pytest.approx(55.65) and sample.labels == {"type": "a"}
    with pytest.raises(ValueError):
        h.observe(1.0)  # its label is required


def test_cursor_round_trips_and_rejects_anything_else() -> None:
    cursor = encode_cursor(1234.5, "abc")
    assert decode_cursor(cursor) == (1234.5, "abc")
    for bad in ("", "x", "%%%", "W1swXQ", encode_cursor(1.0, "a")[:-3] + "!!"):
        with pytest.raises(BadRequest):
            decode_cursor(bad)


def _balanced(expr: str) -> bool:
    depth = 0
    for ch in expr:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth < 0:
            return False
    return depth == 0


def test_alert_rules_are_well_formed() -> None:
    rules = yaml.safe_load((DEPLOY / "alerts.yml").read_text())
    names = set()
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert rule["alert"] not in names
            names.add(rule["alert"])
            assert _balanced(rule["expr"]) and "ringmaster_" in rule["expr"]
            assert _DURATION.match(rule.get("for", "0s")), rule
            assert rule["labels"]["severity"] in ("page", "ticket")
            assert rule["annotations"]["summary"]
    wanted = {"RingmasterNoBeacon", "RingmasterCrashLoop", "RingmasterQueueStarving"}
    assert wanted | {"RingmasterNoPromotion"} <= names
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    assert config["rule_files"] == ["alerts.yml"]


def test_grafana_dashboard_parses_with_unique_panels_and_queries() -> None:
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels) >= 10
    for panel in panels:
        assert panel["targets"] and panel["datasource"]["type"] == "prometheus"
        for target in panel["targets"]:
            assert _balanced(target["expr"]) and "ringmaster_" in target["expr"]


def _metrics(instance: str, histograms: list[HistogramSample]) -> ServiceMetrics:
    return ServiceMetrics(
        service="svc",
        instance=instance,
        status=ServiceStatus.RUNNING,
        uptime_s=1.0,
        rss_bytes=0,
        cpu_seconds=0.0,
        handled=0,
        invalid=0,
        handler_errors=0,
        events_emitted=0,
        events_acked=0,
        events_dropped=0,
        events_pending=0,
        histograms=histograms,
    )


def test_a_round_past_max_payload_is_sent_without_its_histograms() -> None:
    h = Histogram("x_seconds", "x")
    h.observe(0.5)
    cluster = ClusterMetrics(
        prefix="p", collector="c", generated_at=0.0, instances=[_metrics("i", h.samples())]
    )
    whole, trimmed = fit(cluster, 1 << 20)
    assert not trimmed and decode(ClusterMetrics, whole).instances[0].histograms
    bare, trimmed = fit(cluster, len(whole) - 1)
    assert trimmed and decode(ClusterMetrics, bare).instances[0].histograms == []


def test_histograms_of_a_bad_shape_are_left_out_and_counted() -> None:
    good = Histogram("x_seconds", "x", labels=("type",))
    good.observe(0.5, "a")
    bad = HistogramSample(name="x_seconds", bounds=[1.0], counts=[1, 2], count=2)
    other_labels = HistogramSample(name="x_seconds", bounds=[1.0], counts=[1], count=1)
    problems: Counter[str] = Counter()
    samples = [(_metrics("i", []), s) for s in (*good.samples(), bad, other_labels)]
    (family,) = histogram_families(samples, problems)
    assert family.type == "histogram" and problems["bad_histograms"] == 2
    assert {s.labels["type"] for s in family.samples} == {"a"}
