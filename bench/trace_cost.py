"""What trace context costs per event: ``python -m bench.trace_cost`` (no NATS needed).

Measures, in one process, the pieces an emit pays for tracing: the header lookup of
an event outside any span (tracing off: the common case), the same inside a span
(headers built, no exporter), and the id work done per job (a new trace, a child,
an attempt's derived span, parsing a stored traceparent). It also checks that
importing the service layer does not import the OpenTelemetry SDK: the SDK is loaded
only by ``shared.otel.configure`` when an endpoint is set.
"""

from __future__ import annotations

import sys
import timeit
from collections.abc import Callable
from typing import Any

from shared import tracing
from shared.codec import encode
from shared.emitter import EventEmitter
from shared.events import JobStarted, build_event
from shared.subjects import Subjects

N = 200_000


def per_call_ns(func: Callable[[], Any], n: int = N) -> float:
    """Best of five runs of ``n`` calls, in nanoseconds per call."""
    return min(timeit.repeat(func, number=n, repeat=5)) / n * 1e9


def main() -> None:
    """Print one line per measurement."""
    import shared.service  # noqa: F401  (the service layer, for the SDK check below)

    sdk_loaded = any(name.startswith("opentelemetry") for name in sys.modules)
    data = JobStarted(job_id="j" * 32, type="shell", attempt=1, node_id="n1")
    emitter = EventEmitter(Subjects("ringmaster"), "job_manager", "jm-1")
    span = tracing.new_trace().child()
    stored = span.traceparent

    def headers_off() -> None:
        emitter.headers(data)

    def headers_on() -> None:
        with tracing.use(span):
            emitter.headers(data)

    def use_alone() -> None:
        with tracing.use(span):
            pass

    def build() -> None:
        encode(build_event("ringmaster", "job_manager", "jm-1", 1, data))

    rows = [
        ("event headers, outside any span (tracing off)", per_call_ns(headers_off)),
        ("event headers, inside a span (no exporter)", per_call_ns(headers_on)),
        ("tracing.use() enter+exit alone", per_call_ns(use_alone)),
        ("for scale: build_event + encode (every emit)", per_call_ns(build)),
        ("new_trace()", per_call_ns(tracing.new_trace)),
        ("child()", per_call_ns(span.child)),
        ("derived('attempt-3')", per_call_ns(lambda: span.derived("attempt-3"))),
        ("parse(stored traceparent)", per_call_ns(lambda: tracing.parse(stored))),
    ]
    print(f"OpenTelemetry SDK imported by the service layer: {sdk_loaded}")
    for name, ns in rows:
        print(f"{name:<50} {ns:8.0f} ns")


if __name__ == "__main__":
    main()
