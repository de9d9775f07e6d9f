"""Service logs through the bus: ``P.log.<service>.<instance>``, kept in ``P_LOGS``.

A :class:`BusLogHandler` sits on the root logger of a service process. ``emit`` never
blocks and never awaits: it turns the record into a :class:`LogEntry` and appends it
to a bounded queue (any thread may log). The :class:`LogPublisher`, a task in the
service's task group, drains the queue with core NATS publishes into the subject the
``P_LOGS`` stream captures.

Why core publish and not an acknowledged JetStream publish: a log line is a
diagnostic, not durable state. An awaited ack per line costs a round trip (4-6k
msg/s on the reference machine), and during a NATS outage it would back up into the
very queue that must not block the service. The stream discards old records when
full, so the server never refuses a record; what can still be lost is counted: a
full queue (``dropped_full``) and a publish the client refused (``dropped_publish``,
for instance its reconnect buffer full). Both show in the health details.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import time
from collections import deque
from typing import Any, Protocol

import msgspec
import nats.errors
from nats.aio.client import Client

from shared.codec import encode
from shared.instance import Instance


class LogSource(Instance, Protocol):
    """What the log stream reads of its service: who it is, its settings, its bus."""

    @property
    def nc(self) -> Client: ...


#: Longest message and exception text kept in one record (NATS max_payload is 1 MiB).
TEXT_LIMIT = 16_384

#: The service that owns the running task. Several services may share one process
#: (tests, hollow nodes): each handler publishes only its own service's records.
OWNER: contextvars.ContextVar[object | None] = contextvars.ContextVar(
    "ringmaster_log_owner", default=None
)


_FORMATTER = logging.Formatter()


class LogEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One log record on ``P.log.<service>.<instance>``."""

    time: float
    level: str
    service: str
    instance: str
    logger: str
    message: str
    exception: str = ""
    host: str = ""
    pid: int = 0


class LogStats(msgspec.Struct, kw_only=True):
    """Counters of one handler, shown in the health details under ``logs``."""

    queued: int = 0
    published: int = 0
    dropped_full: int = 0
    dropped_publish: int = 0
    last_error: str = ""


def _cut(text: str) -> str:
    return text if len(text) <= TEXT_LIMIT else text[: TEXT_LIMIT - 1] + "…"


class BusLogHandler(logging.Handler):
    """A logging handler that queues records for the bus; never blocks the caller."""

    def __init__(
        self,
        *,
        owner: object,
        service: str,
        instance: str,
        host: str,
        pid: int,
        level: str,
        capacity: int,
    ) -> None:
        super().__init__(level)
        self.owner = owner
        self.tags = (service, instance, host, pid)
        self.capacity = capacity
        self.stats = LogStats()
        self._queue: deque[LogEntry] = deque()
        self._lock = threading.Lock()
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self.wake = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        """Queue ``record`` (dropped and counted when the queue is full)."""
        owner = OWNER.get()
        if owner is not None and owner is not self.owner:
            return  # another service of this process logged it
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            self.handleError(record)  # a bad format string: logging's own report
            return
        service, instance, host, pid = self.tags
        exception = _FORMATTER.formatException(record.exc_info) if record.exc_info else ""
        entry = LogEntry(
            time=record.created,
            level=record.levelname,
            service=service,
            instance=instance,
            logger=record.name,
            message=_cut(message),
            exception=_cut(exception),
            host=host,
            pid=pid,
        )
        with self._lock:
            if len(self._queue) >= self.capacity:
                self.stats.dropped_full += 1
                return
            self._queue.append(entry)
            self.stats.queued += 1
        if threading.get_ident() == self._loop_thread:
            self.wake.set()
        elif not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.wake.set)

    def take(self) -> list[LogEntry]:
        """Every queued record, oldest first; the queue is left empty."""
        with self._lock:
            batch = list(self._queue)
            self._queue.clear()
        return batch

    def details(self) -> dict[str, Any]:
        """The counters and the queue's fill, for health details."""
        with self._lock:
            waiting = len(self._queue)
        return {**msgspec.to_builtins(self.stats), "waiting": waiting, "level": self.level}


class LogPublisher:
    """Publishes what a :class:`BusLogHandler` queued, as long as the service runs."""

    def __init__(self, nc: Client, subject: str, handler: BusLogHandler) -> None:
        self.nc = nc
        self.subject = subject
        self.handler = handler

    @classmethod
    def for_service(cls, service: LogSource) -> LogPublisher:
        """The handler and publisher of a running service, by its config."""
        cfg = service.config
        handler = BusLogHandler(
            owner=service,
            service=service.name,
            instance=service.instance,
            host=service.host,
            pid=service.pid,
            level=cfg.log_stream_level,
            capacity=cfg.log_queue_size,
        )
        return cls(service.nc, service.subjects.log(service.name, service.instance), handler)

    async def run(self) -> None:
        """Attach the handler, then publish queued records whenever some arrive, until
        cancelled at service stop (the handler is detached then)."""
        logging.getLogger().addHandler(self.handler)  # the root: every logger's records
        try:
            while True:
                await self.handler.wake.wait()
                self.handler.wake.clear()
                await self.publish_queued()
        finally:
            logging.getLogger().removeHandler(self.handler)

    async def publish_queued(self) -> None:
        """Publish what is queued now; a refused publish is counted, never raised."""
        stats = self.handler.stats
        batch = self.handler.take()
        for index, entry in enumerate(batch):
            try:
                await self.nc.publish(self.subject, encode(entry))
            except (nats.errors.Error, OSError) as exc:
                # Logging the failure would feed this very queue: count it instead.
                stats.dropped_publish += len(batch) - index
                stats.last_error = f"{time.strftime('%H:%M:%S')} {exc!r}"
                return
            stats.published += 1
