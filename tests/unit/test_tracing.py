"""The W3C trace context: parsing, children, derived spans, the current span."""

from __future__ import annotations

import subprocess
import sys

import pytest

from shared import tracing
from shared.tracing import TraceContext

VALID = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_a_valid_traceparent_round_trips() -> None:
    ctx = tracing.parse(VALID, "vendor=1")
    assert (ctx.trace_id, ctx.span_id, ctx.flags, ctx.state) == (
        "4bf92f3577b34da6a3ce929d0e0e4736",
        "00f067aa0ba902b7",
        "01",
        "vendor=1",
    )
    assert ctx.traceparent == VALID
    assert ctx.headers() == {"traceparent": VALID, "tracestate": "vendor=1"}


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "garbage",
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # unknown version
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",  # short trace id
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # zero span id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bz-01",  # not hex
    ],
)
def test_a_malformed_header_is_counted_and_ignored(bad: str) -> None:
    before = tracing.MALFORMED["unit"]
    assert tracing.from_headers({"traceparent": bad}, "unit") is None
    assert tracing.MALFORMED["unit"] == before + 1
    with pytest.raises(ValueError):
        tracing.parse(bad)


def test_absent_headers_are_not_malformed() -> None:
    before = sum(tracing.MALFORMED.values())
    assert tracing.from_headers(None, "unit") is None
    assert tracing.from_headers({"other": "x"}, "unit") is None
    assert tracing.from_value("", "unit") is None
    assert sum(tracing.MALFORMED.values()) == before


def test_children_stay_in_the_trace_and_name_their_parent() -> None:
    root = tracing.new_trace()
    child = root.child()
    assert (child.trace_id, child.parent_id) == (root.trace_id, root.span_id)
    assert child.span_id != root.span_id
    assert child.event_headers()[tracing.PARENT_HEADER] == root.span_id
    assert tracing.PARENT_HEADER not in root.event_headers()
    assert tracing.new_trace().trace_id != root.trace_id


def test_a_derived_span_is_the_same_for_the_same_key() -> None:
    job = tracing.new_trace()
    again = tracing.parse(job.traceparent)
    assert job.derived("attempt-2") == again.derived("attempt-2")
    assert job.derived("attempt-2").span_id != job.derived("attempt-3").span_id
    assert job.derived("attempt-2").parent_id == job.span_id


def test_use_sets_the_current_span_for_the_block_only() -> None:
    ctx = TraceContext("a" * 32, "b" * 16)
    assert tracing.current() is None and tracing.event_headers() is None
    with tracing.use(ctx):
        assert tracing.current() == ctx
        assert tracing.outgoing() == {"traceparent": ctx.traceparent}
        with tracing.use(None):
            assert tracing.outgoing() is None
    assert tracing.current() is None


def test_incoming_parses_the_request_headers_only_when_asked() -> None:
    with tracing.receiving({"traceparent": VALID}):
        found = tracing.incoming("unit")
    assert found is not None and found.span_id == "00f067aa0ba902b7"
    assert tracing.incoming("unit") is None


def test_the_service_layer_does_not_import_the_sdk() -> None:
    # Every emit goes through shared.service; the SDK is loaded only by otel.configure.
    probe = (
        "import shared.service, sys; print(any(m.startswith('opentelemetry') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
