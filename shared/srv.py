"""Discovery through the NATS micro ``$SRV`` API, and lenient decoding of its replies.

Every NATS micro service, in any language, answers ``$SRV.PING``, ``$SRV.INFO`` and
``$SRV.STATS`` (ADR-32), on the bare verb, on ``<verb>.<name>`` and on
``<verb>.<name>.<id>``. The replies follow the ``io.nats.micro.v1.*_response`` schemas
only loosely in practice: nats-py sends ``"description": null`` and ``"data": null``;
Go omits ``data``, sends ``"metadata": null`` for endpoints and nanosecond timestamps;
newer implementations add fields. nats-py's own ``from_dict`` breaks on Go's STATS
(the timestamp, the missing ``data``), so replies are decoded here with msgspec
Structs that ignore unknown fields, default what may be missing, and accept ``null``
where some implementation sends it. Only ``name`` and ``id`` are required: without
them a reply identifies nothing.

``discover`` sends one request and gathers every reply that arrives within a timeout;
it returns raw payloads so that one odd service cannot hide the others: decode each
with ``decode_ping``, ``decode_info`` or ``decode_stats`` and skip what fails.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Final

import msgspec
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg

__all__ = [
    "SRV_PREFIX",
    "SRV_VERBS",
    "SrvEndpointInfo",
    "SrvEndpointStats",
    "SrvInfo",
    "SrvPing",
    "SrvStats",
    "decode_info",
    "decode_ping",
    "decode_stats",
    "discover",
    "srv_subject",
]

SRV_PREFIX: Final = "$SRV"
SRV_VERBS: Final = ("PING", "INFO", "STATS")
_BAD_TOKEN_CHARS: Final = frozenset(". *>\t\r\n")


class SrvPing(msgspec.Struct, frozen=True, kw_only=True):
    """A ``$SRV.PING`` reply (``io.nats.micro.v1.ping_response``)."""

    name: str
    id: str
    version: str = ""
    type: str = ""
    metadata: dict[str, str] | None = None


class SrvEndpointInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One endpoint in a ``$SRV.INFO`` reply."""

    name: str = ""
    subject: str = ""
    queue_group: str | None = None
    metadata: dict[str, str] | None = None


class SrvInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A ``$SRV.INFO`` reply (``io.nats.micro.v1.info_response``)."""

    name: str
    id: str
    version: str = ""
    type: str = ""
    description: str | None = None
    metadata: dict[str, str] | None = None
    endpoints: list[SrvEndpointInfo] = []


class SrvEndpointStats(msgspec.Struct, frozen=True, kw_only=True):
    """One endpoint in a ``$SRV.STATS`` reply; times are in nanoseconds."""

    name: str = ""
    subject: str = ""
    queue_group: str | None = None
    num_requests: int = 0
    num_errors: int = 0
    last_error: str | None = None
    processing_time: int = 0
    average_processing_time: int = 0
    data: object = None  # whatever the service's stats handler returned, often a dict


class SrvStats(msgspec.Struct, frozen=True, kw_only=True):
    """A ``$SRV.STATS`` reply (``io.nats.micro.v1.stats_response``).

    ``started`` is kept as the string sent (RFC 3339), since its precision differs
    between implementations.
    """

    name: str
    id: str
    version: str = ""
    type: str = ""
    started: str = ""
    metadata: dict[str, str] | None = None
    endpoints: list[SrvEndpointStats] = []


_PING_DECODER: Final = msgspec.json.Decoder(SrvPing)
_INFO_DECODER: Final = msgspec.json.Decoder(SrvInfo)
_STATS_DECODER: Final = msgspec.json.Decoder(SrvStats)


def decode_ping(data: bytes) -> SrvPing:
    """Decode a PING reply; raises ``msgspec.DecodeError`` or ``msgspec.ValidationError``."""
    return _PING_DECODER.decode(data)


def decode_info(data: bytes) -> SrvInfo:
    """Decode an INFO reply; raises ``msgspec.DecodeError`` or ``msgspec.ValidationError``."""
    return _INFO_DECODER.decode(data)


def decode_stats(data: bytes) -> SrvStats:
    """Decode a STATS reply; raises ``msgspec.DecodeError`` or ``msgspec.ValidationError``."""
    return _STATS_DECODER.decode(data)


def _check_token(what: str, token: str) -> None:
    if not token or not _BAD_TOKEN_CHARS.isdisjoint(token):
        raise ValueError(f"invalid {what} {token!r}: one non-empty subject token needed")


def srv_subject(verb: str, name: str | None = None, instance: str | None = None) -> str:
    """Return ``$SRV.<verb>[.<name>[.<instance>]]``.

    ``verb`` is one of ``PING``, ``INFO``, ``STATS``; an instance id needs a name.
    Raises ValueError on anything else.
    """
    if verb not in SRV_VERBS:
        raise ValueError(f"unknown $SRV verb {verb!r}; expected one of {', '.join(SRV_VERBS)}")
    parts = [SRV_PREFIX, verb]
    if name is not None:
        _check_token("service name", name)
        parts.append(name)
    if instance is not None:
        if name is None:
            raise ValueError("a service instance id needs the service name too")
        _check_token("instance id", instance)
        parts.append(instance)
    return ".".join(parts)


async def discover(
    nc: Client,
    verb: str,
    name: str | None = None,
    *,
    timeout: float = 0.5,
    expected: int | None = None,
) -> list[bytes]:
    """Request ``$SRV.<verb>[.<name>]`` once and return every reply's raw payload.

    Replies are gathered on a fresh inbox until ``timeout`` seconds pass, or as soon as
    ``expected`` replies have arrived. A "no responders" status ends the wait early with
    no replies. Payloads come back in arrival order and undecoded.
    """
    subject = srv_subject(verb, name)
    if timeout < 0:
        raise ValueError(f"timeout must be >= 0, got {timeout}")
    if expected is not None and expected < 1:
        raise ValueError(f"expected must be >= 1, got {expected}")

    replies: list[bytes] = []
    done = asyncio.Event()

    async def on_reply(msg: Msg) -> None:
        if msg.headers and "Status" in msg.headers:
            if msg.headers["Status"] == "503":  # no responders: nobody will answer
                done.set()
            return
        replies.append(msg.data)
        if expected is not None and len(replies) >= expected:
            done.set()

    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox, cb=on_reply)
    try:
        await nc.publish(subject, b"", reply=inbox)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), timeout)
    finally:
        # closed, draining or already gone: the subscription ends with the connection
        with contextlib.suppress(nats.errors.Error):
            await sub.unsubscribe()
    return list(replies)
