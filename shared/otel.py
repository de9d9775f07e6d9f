"""Span export over OTLP/HTTP, loaded only when an endpoint is configured.

The trace context itself (``shared.tracing``) needs no SDK: ids travel in headers
whether or not anything exports them. When a service's ``otlp_endpoint`` (or the
standard ``OTEL_EXPORTER_OTLP_ENDPOINT``) is set, :func:`configure` imports the
OpenTelemetry SDK and the OTLP exporter and returns a :class:`SpanSink`; otherwise it
returns None and nothing here is ever imported, so tracing costs nothing more.

Spans are built from our own ids (a job's span id lives in its record and must be the
same in every process that touches the job), so the sink hands finished
``ReadableSpan`` objects straight to a ``BatchSpanProcessor`` rather than going
through a Tracer, which would mint its own ids. The processor exports from its own
thread: the event loop never waits on the collector.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from shared.tracing import TraceContext

if TYPE_CHECKING:  # the SDK is imported at run time only by configure()
    from opentelemetry.sdk.trace.export import SpanExporter

log = logging.getLogger("ringmaster.otel")

Scalar = str | bool | int | float


def endpoint_from(configured: str) -> str:
    """The configured endpoint, else the standard environment variable, else ""."""
    return configured or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "")


class SpanSink:
    """Finished spans, exported in batches through one processor."""

    def __init__(self, service: str, instance: str, exporter: SpanExporter) -> None:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        self._resource = Resource.create({"service.name": service, "service.instance.id": instance})
        self._scope = InstrumentationScope("ringmaster")
        self._processor = BatchSpanProcessor(exporter)
        self.recorded = 0

    def record(
        self,
        ctx: TraceContext,
        name: str,
        *,
        start: float | None = None,
        end: float | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> None:
        """Export span ``ctx`` (its own ids and parent) from ``start`` to ``end`` (epoch s)."""
        from opentelemetry.sdk.trace import ReadableSpan
        from opentelemetry.trace import SpanContext, TraceFlags

        flags = TraceFlags(int(ctx.flags, 16))
        own = SpanContext(int(ctx.trace_id, 16), int(ctx.span_id, 16), False, flags)
        parent = (
            SpanContext(int(ctx.trace_id, 16), int(ctx.parent_id, 16), True, flags)
            if ctx.parent_id
            else None
        )
        now = time.time()
        span = ReadableSpan(
            name,
            context=own,
            parent=parent,
            resource=self._resource,
            attributes=_scalars(attributes or {}),
            instrumentation_scope=self._scope,
            start_time=int((start if start is not None else now) * 1e9),
            end_time=int((end if end is not None else now) * 1e9),
        )
        self._processor.on_end(span)
        self.recorded += 1

    def event(self, ctx: TraceContext, event_type: str, data: Mapping[str, Any]) -> None:
        """An event as an instant span under the span it belongs to."""
        self.record(ctx.child(), event_type, attributes=data)

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Export what is queued (blocking: call from a worker thread)."""
        return bool(self._processor.force_flush(int(timeout_s * 1000)))

    def shutdown(self) -> None:
        """Flush and stop the export thread (blocking: call from a worker thread)."""
        self._processor.shutdown()  # type: ignore[no-untyped-call]


def _scalars(values: Mapping[str, Any]) -> dict[str, Scalar]:
    # OTLP attributes are scalars (or lists of them); nested data is shown as text.
    out: dict[str, Scalar] = {}
    for key, value in values.items():
        if isinstance(value, str | bool | int | float):
            out[key] = value
        elif value is not None:
            out[key] = str(value)[:256]
    return out


#: The running service's sink, set in its context so its tasks (and only they) see it:
#: tests run several services in one process, each exporting as itself.
_SINK: ContextVar[SpanSink | None] = ContextVar("ringmaster_span_sink", default=None)


def sink() -> SpanSink | None:
    """The sink of the service this task belongs to (None: export is off)."""
    return _SINK.get()


def install(spans: SpanSink | None) -> None:
    """Make ``spans`` the sink of the current context and the tasks started from it."""
    _SINK.set(spans)


def configure(
    endpoint: str, service: str, instance: str, exporter: SpanExporter | None = None
) -> SpanSink | None:
    """A sink exporting to ``endpoint`` (OTLP/HTTP), or None when tracing export is off.

    ``exporter`` replaces the OTLP one (the SDK's in-memory exporter, for instance).
    """
    url = endpoint_from(endpoint)
    if not url and exporter is None:
        return None
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        # The standard base URL gets the standard path; a full URL is used as given.
        if not url.rstrip("/").endswith("/v1/traces"):
            url = url.rstrip("/") + "/v1/traces"
        exporter = OTLPSpanExporter(endpoint=url)
    log.info("%s: exporting spans to %s", service, url or type(exporter).__name__)
    return SpanSink(service, instance, exporter)
