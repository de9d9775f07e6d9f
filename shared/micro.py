"""The NATS micro service protocol (io.nats.micro.v1), spoken by every service.

Written here rather than taken from nats-py because nats-py's version breaks the
official schemas (``description: null``, stats ``data: null``), cancels in-flight
handlers on stop, and cannot take our instance name as its id. This one answers
``$SRV.PING|INFO|STATS`` at all three levels (all, by name, by name and id) with
replies that validate against the io.nats.micro.v1 schemas, and keeps per-endpoint
request, error and processing-time counts that handlers report into.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from shared.codec import encode

QUEUE_GROUP = "q"
VERBS = ("PING", "INFO", "STATS")


class EndpointInfo(msgspec.Struct, frozen=True):
    """One endpoint as INFO describes it."""

    name: str
    subject: str
    queue_group: str
    metadata: dict[str, str]


class EndpointStats(msgspec.Struct):
    """Counters for one endpoint, as STATS reports them."""

    name: str
    subject: str
    queue_group: str
    num_requests: int = 0
    num_errors: int = 0
    last_error: str = ""
    processing_time: int = 0
    average_processing_time: int = 0
    data: dict[str, Any] = msgspec.field(default_factory=dict)

    def record(self, elapsed_ns: int, error: str | None) -> None:
        """Count one handled request."""
        self.num_requests += 1
        self.processing_time += elapsed_ns
        self.average_processing_time = self.processing_time // self.num_requests
        if error is not None:
            self.num_errors += 1
            self.last_error = error


MsgHandler = Callable[[Msg], Awaitable[None]]


class MicroService:
    """One instance's presence in the NATS service API."""

    def __init__(
        self,
        nc: Client,
        *,
        name: str,
        instance_id: str,
        version: str,
        description: str,
        metadata: dict[str, str],
    ) -> None:
        self._nc = nc
        self.name = name
        self.id = instance_id
        self.version = version
        self.description = description or name
        self.metadata = metadata
        self.started = datetime.now(UTC)
        self.endpoints: dict[str, EndpointStats] = {}
        self._endpoint_meta: dict[str, dict[str, str]] = {}
        self._control: list[Subscription] = []
        self._endpoint_subs: list[Subscription] = []

    def _identity(self, kind: str) -> dict[str, Any]:
        return {
            "type": f"io.nats.micro.v1.{kind}_response",
            "name": self.name,
            "id": self.id,
            "version": self.version,
            "metadata": self.metadata,
        }

    def ping(self) -> dict[str, Any]:
        """The PING reply."""
        return self._identity("ping")

    def info(self) -> dict[str, Any]:
        """The INFO reply."""
        endpoints = [
            EndpointInfo(e.name, e.subject, e.queue_group, self._endpoint_meta[e.name])
            for e in self.endpoints.values()
        ]
        return {**self._identity("info"), "description": self.description, "endpoints": endpoints}

    def stats(self) -> dict[str, Any]:
        """The STATS reply."""
        started = self.started.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        return {
            **self._identity("stats"),
            "started": started,
            "endpoints": list(self.endpoints.values()),
        }

    async def start(self) -> None:
        """Answer PING, INFO and STATS at every level."""
        answers = {"PING": self.ping, "INFO": self.info, "STATS": self.stats}
        for verb in VERBS:
            build = answers[verb]

            async def reply(msg: Msg, build: Callable[[], dict[str, Any]] = build) -> None:
                if msg.reply:
                    await msg.respond(encode(build()))

            for subject in (
                f"$SRV.{verb}",
                f"$SRV.{verb}.{self.name}",
                f"$SRV.{verb}.{self.name}.{self.id}",
            ):
                self._control.append(await self._nc.subscribe(subject, cb=reply))

    async def add_endpoint(
        self,
        name: str,
        subject: str,
        handler: MsgHandler,
        *,
        queue_group: str | None = QUEUE_GROUP,
        metadata: dict[str, str] | None = None,
    ) -> EndpointStats:
        """Subscribe an endpoint; the handler reports into the returned stats."""
        stats = EndpointStats(name=name, subject=subject, queue_group=queue_group or "")
        self.endpoints[name] = stats
        self._endpoint_meta[name] = metadata or {}
        sub = await self._nc.subscribe(subject, queue=queue_group or "", cb=handler)
        self._endpoint_subs.append(sub)
        return stats

    async def stop_endpoints(self) -> None:
        """Stop taking requests; PING/INFO/STATS keep answering until ``stop``."""
        for sub in self._endpoint_subs:
            await sub.unsubscribe()
        self._endpoint_subs.clear()

    async def stop(self) -> None:
        """Leave the service API."""
        await self.stop_endpoints()
        for sub in self._control:
            await sub.unsubscribe()
        self._control.clear()


def elapsed_since(start_ns: int) -> int:
    """Nanoseconds since ``start_ns`` (from time.perf_counter_ns)."""
    return time.perf_counter_ns() - start_ns
