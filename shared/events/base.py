"""The event payload base class, its registry, and the CloudEvents envelope builder."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any, ClassVar

import msgspec

from shared.contracts import Event

REGISTRY: dict[str, type[EventData]] = {}


class EventData(msgspec.Struct, frozen=True, kw_only=True):
    """Base of every event payload; subclasses set ``TYPE`` (``NOUN_PHASE``)."""

    TYPE: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.TYPE:
            raise TypeError(f"{cls.__name__} must set TYPE")
        if cls.TYPE in REGISTRY and REGISTRY[cls.TYPE] is not cls:
            raise TypeError(f"event type {cls.TYPE} already registered")
        REGISTRY[cls.TYPE] = cls


def decode_data(event: Event) -> EventData | None:
    """The typed payload of ``event``; None for a type this process does not know."""
    cls = REGISTRY.get(event.type)
    if cls is None:
        return None
    return msgspec.convert(event.data, cls)


def build_event(
    prefix: str,
    service: str,
    instance: str,
    sequence: int,
    data: EventData,
    subject: str | None = None,
    *,
    incarnation: str = "",
    event_id: str = "",
) -> Event:
    """The CloudEvents envelope for ``data`` from one instance.

    ``event_id`` names an announcement deterministically (a repeat is the same event);
    without it the id is unique per instance, sequence and time.
    """
    now = time.time()
    return Event(
        id=event_id or f"{instance}-{sequence}-{int(now * 1e3):x}",
        source=f"/{prefix}/{service}/{instance}",
        type=data.TYPE,
        time=rfc3339(now),
        subject=subject,
        sequence=sequence,
        data=msgspec.to_builtins(data),
        incarnation=incarnation,
    )


#: The last whole second formatted, and its text: events come in bursts within one
#: second, and formatting a datetime costs several times the rest of the envelope.
_last_second: list[tuple[int, str]] = [(-1, "")]


def rfc3339(now: float) -> str:
    """``now`` (Unix seconds) as RFC 3339 UTC with microseconds, ``...T12:00:00.123456Z``."""
    second = int(now)
    cached, text = _last_second[0]
    if cached != second:
        text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _last_second[0] = (second, text)
    micros = min(round((now - second) * 1e6), 999_999)
    return f"{text}.{micros:06d}Z"
