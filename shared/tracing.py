"""W3C trace context carried in NATS headers, with no OpenTelemetry import.

A job, an attempt, a generation: each is a span of one trace. The context travels as
the W3C ``traceparent`` header (``00-<trace_id>-<span_id>-<flags>``), with
``tracestate`` when the caller sent one, on requests, on dispatches in ``P_JOBS`` and
on every event; events add ``Ringmaster-Parent-Id``, the span's parent, so a reader
of the stream can rebuild the tree without an exporter.

The hot path stays cheap when no exporter is configured: ids come from
``random.getrandbits`` (what the OpenTelemetry SDK's own RandomIdGenerator uses; ids
need to be unique, not secret), the current span lives in a ContextVar, and an event
without a current span costs one ``ContextVar.get``. ``shared.otel`` imports the SDK
only when an OTLP endpoint is set.

A malformed header is counted in :data:`MALFORMED`, logged once per kind, and
ignored: the work goes on under a fresh trace.
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import NamedTuple

log = logging.getLogger("ringmaster.tracing")

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
#: The span's parent on events (W3C has no header for it; readers rebuild the tree).
PARENT_HEADER = "Ringmaster-Parent-Id"

_FORMAT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_PARENT = re.compile(r"^[0-9a-f]{16}$")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16

#: Malformed trace headers seen, by where they came from (health details show them).
MALFORMED: Counter[str] = Counter()


class TraceContext(NamedTuple):
    """One span's identity: its trace, its own id, its parent's id ("" for a root)."""

    trace_id: str
    span_id: str
    parent_id: str = ""
    flags: str = "01"
    state: str = ""

    @property
    def traceparent(self) -> str:
        """The W3C ``traceparent`` value naming this span."""
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}"

    def child(self) -> TraceContext:
        """A new span under this one, with a random id."""
        return TraceContext(self.trace_id, _span_id(), self.span_id, self.flags, self.state)

    def derived(self, key: str) -> TraceContext:
        """A child whose id follows from ``key``: the same span after a restart.

        An attempt's span is derived from its job's span and fencing token, so any job
        manager instance, and the agent, name it alike without storing it.
        """
        digest = hashlib.blake2b(f"{self.span_id}/{key}".encode(), digest_size=8).hexdigest()
        return TraceContext(self.trace_id, digest, self.span_id, self.flags, self.state)

    def headers(self) -> dict[str, str]:
        """``traceparent`` (and ``tracestate`` when set) for an outgoing message."""
        out = {TRACEPARENT: self.traceparent}
        if self.state:
            out[TRACESTATE] = self.state
        return out

    def event_headers(self) -> dict[str, str]:
        """The headers plus the parent's id: what every event of this span carries."""
        out = self.headers()
        if self.parent_id:
            out[PARENT_HEADER] = self.parent_id
        return out


def _span_id() -> str:
    return f"{random.getrandbits(64) or 1:016x}"


def new_trace() -> TraceContext:
    """The root span of a new trace."""
    return TraceContext(f"{random.getrandbits(128) or 1:032x}", _span_id())


def parse(traceparent: str, tracestate: str = "") -> TraceContext:
    """The context a ``traceparent`` value names; ValueError when malformed."""
    found = _FORMAT.match(traceparent.strip().lower())
    if found is None:
        raise ValueError(f"not a version-00 traceparent: {traceparent[:80]!r}")
    trace_id, span_id, flags = found.groups()
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        raise ValueError("all-zero trace or span id")
    return TraceContext(trace_id, span_id, "", flags, tracestate[:512])


def from_headers(headers: Mapping[str, str] | None, kind: str) -> TraceContext | None:
    """The context in a message's headers; None when absent or malformed (counted)."""
    if not headers or TRACEPARENT not in headers:
        return None
    span = _counted(headers[TRACEPARENT], kind, headers.get(TRACESTATE, ""))
    parent = headers.get(PARENT_HEADER, "")
    if span is None or not parent:
        return span
    if _PARENT.match(parent) is None:
        _count(kind, f"bad {PARENT_HEADER} {parent[:40]!r}")
        return span
    return span._replace(parent_id=parent)


def from_value(value: str, kind: str, tracestate: str = "") -> TraceContext | None:
    """The context in a stored ``traceparent``; None when empty ("": none kept) or bad."""
    return _counted(value, kind, tracestate) if value else None


def _counted(value: str, kind: str, tracestate: str) -> TraceContext | None:
    try:
        return parse(value, tracestate)
    except ValueError as exc:
        _count(kind, str(exc))
        return None


def _count(kind: str, why: str) -> None:
    MALFORMED[kind] += 1
    if MALFORMED[kind] == 1:
        log.warning("%s: malformed trace header ignored (counted from now on): %s", kind, why)


_CURRENT: ContextVar[TraceContext | None] = ContextVar("ringmaster_trace", default=None)
_INCOMING: ContextVar[Mapping[str, str] | None] = ContextVar("ringmaster_incoming", default=None)


def current() -> TraceContext | None:
    """The span the running task works in, if any."""
    return _CURRENT.get()


class use:  # lower case: it reads as a function, ``with tracing.use(ctx):``
    """Make ``ctx`` current inside the block: events and requests there carry it.

    A class, not a generator context manager: it is entered around every traced
    emit, and this is about three times cheaper.
    """

    __slots__ = ("_ctx", "_token")

    def __init__(self, ctx: TraceContext | None) -> None:
        self._ctx = ctx

    def __enter__(self) -> TraceContext | None:
        self._token = _CURRENT.set(self._ctx)
        return self._ctx

    def __exit__(self, *_: object) -> None:
        _CURRENT.reset(self._token)


@contextmanager
def receiving(headers: Mapping[str, str] | None) -> Iterator[None]:
    """Keep a request's headers where :func:`incoming` finds them (parsed only if asked)."""
    token = _INCOMING.set(headers)
    try:
        yield
    finally:
        _INCOMING.reset(token)


def incoming(kind: str) -> TraceContext | None:
    """The trace context of the request being handled, if it carried a valid one."""
    return from_headers(_INCOMING.get(), kind)


def outgoing() -> dict[str, str] | None:
    """Headers for a request made now: the current span's, or None outside any trace."""
    ctx = _CURRENT.get()
    return None if ctx is None else ctx.headers()


def event_headers() -> dict[str, str] | None:
    """Headers for an event emitted now: the current span's, or None outside any trace."""
    ctx = _CURRENT.get()
    return None if ctx is None else ctx.event_headers()
