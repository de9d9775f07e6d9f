"""The events of one service instance: envelope, sequence and trace headers.

An instance counts its events per incarnation (a fresh id per process start), so a
restart is a new count, never mistaken for a gap, and a gap is a real loss. An
announcement of a durable change carries a deterministic id instead (the stream
de-duplicates a repeat by any incarnation), so it takes no place in the count.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import msgspec

from shared import tracing
from shared.codec import encode
from shared.events import EventData, build_event
from shared.otel import SpanSink
from shared.subjects import Subjects


class EventEmitter:
    """Builds the events of ``service``/``instance`` for the outbox to publish."""

    def __init__(
        self,
        subjects: Subjects,
        service: str,
        instance: str,
        spans: Callable[[], SpanSink | None] = lambda: None,
    ) -> None:
        self.subjects = subjects
        self.service = service
        self.instance = instance
        self.spans = spans
        self.incarnation = uuid.uuid4().hex[:12]
        self.sequence = 0

    def build(
        self, data: EventData, subject: str | None, msg_id: str = ""
    ) -> tuple[str, bytes, str]:
        """The event's subject, bytes and id (``msg_id`` when it is an announcement)."""
        sequence = 0
        if not msg_id:
            self.sequence += 1
            sequence = self.sequence
        event = build_event(
            self.subjects.prefix,
            self.service,
            self.instance,
            sequence,
            data,
            subject,
            incarnation=self.incarnation,
            event_id=msg_id,
        )
        return self.subjects.event(self.service, data.TYPE), encode(event), event.id

    def headers(self, data: EventData) -> dict[str, str] | None:
        """The current trace context as headers (None outside a span); the span sink,
        when there is one, records the event."""
        # Outside a span this is one ContextVar read: the cost of tracing when unused.
        ctx = tracing.current()
        if ctx is None:
            return None
        spans = self.spans()
        if spans is not None:
            spans.event(ctx, data.TYPE, msgspec.structs.asdict(data))
        return ctx.event_headers()
