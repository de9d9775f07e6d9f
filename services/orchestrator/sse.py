"""Server-sent events: a registry of connected clients and one frame fanned out to all.

A frame is encoded once and the same bytes go to every client, so ten open pages cost
what one does. Each client has a small buffer of frames; when a slow client's buffer
is full the frame is dropped for that client and counted (the next snapshot carries
the whole state again), never queued without bound. A client that does not take a
frame within ``send_timeout`` is cut off. Closing the page closes the socket, which
the watcher sees at once, and the client leaves the registry in every case.
"""

from __future__ import annotations

import itertools
import logging
from collections import Counter
from collections.abc import Callable

import anyio
from anyio.abc import SocketStream
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from services.orchestrator.http import error_body, response_head

log = logging.getLogger("ringmaster.orchestrator.sse")

#: Headers of an event stream; ``retry`` tells the browser how soon to reconnect.
_OPEN = response_head(200, "text/event-stream; charset=utf-8", None) + b"retry: 2000\n\n"


def frame(event: str, data: bytes) -> bytes:
    """One SSE message; ``data`` must be a single line (compact JSON is)."""
    return b"event: " + event.encode() + b"\ndata: " + data + b"\n\n"


class SseHub:
    """Connected event-stream clients; ``serve`` is an ``HttpServer`` stream handler."""

    def __init__(
        self,
        greeting: Callable[[], list[bytes]],
        *,
        max_clients: int = 16,
        buffer: int = 4,
        send_timeout: float = 10.0,
    ) -> None:
        #: The frames a new client gets first (the current snapshot and the event tail).
        self.greeting = greeting
        self.max_clients = max_clients
        self.buffer = buffer
        self.send_timeout = send_timeout
        self.stats: Counter[str] = Counter()
        self._clients: dict[int, MemoryObjectSendStream[bytes]] = {}
        self._ids = itertools.count()

    @property
    def clients(self) -> int:
        """How many clients are connected now."""
        return len(self._clients)

    def publish(self, data: bytes) -> None:
        """Queue ``data`` (one or more frames) for every client; a full buffer drops it."""
        for send in self._clients.values():
            try:
                send.send_nowait(data)
            except anyio.WouldBlock:
                self.stats["dropped_frames"] += 1
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self.stats["dropped_frames"] += 1  # leaving right now; its serve() cleans up

    def health(self) -> dict[str, int]:
        """Clients now and every counter, for the orchestrator's health details."""
        return {"clients": self.clients, "max_clients": self.max_clients, **self.stats}

    async def serve(self, stream: SocketStream) -> None:
        """Stream frames to one client until it leaves, lags, or the server stops."""
        if len(self._clients) >= self.max_clients:
            self.stats["rejected_full"] += 1
            body = error_body(503, "too many dashboard clients")
            with anyio.fail_after(self.send_timeout):
                await stream.send(response_head(503, "application/json", len(body)) + body)
            return
        send, receive = anyio.create_memory_object_stream[bytes](self.buffer)
        client = next(self._ids)
        self._clients[client] = send
        self.stats["connects"] += 1
        try:
            with receive, anyio.CancelScope() as scope:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._watch_close, stream, scope)
                    await self._pump(stream, receive)
                    scope.cancel()
        finally:
            del self._clients[client]
            send.close()
            self.stats["disconnects"] += 1

    def _greet(self) -> bytes:
        try:
            return b"".join(self.greeting())
        except Exception:  # a bug in the snapshot: counted; the next tick sends one anyway
            self.stats["greeting_errors"] += 1
            if self.stats["greeting_errors"] == 1:
                log.exception("dashboard greeting failed (further ones are only counted)")
            return b""

    async def _pump(self, stream: SocketStream, receive: MemoryObjectReceiveStream[bytes]) -> None:
        try:
            with anyio.fail_after(self.send_timeout):
                await stream.send(_OPEN + self._greet())
            async for data in receive:
                with anyio.fail_after(self.send_timeout):
                    await stream.send(data)
        except TimeoutError:
            self.stats["slow_clients"] += 1
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            self.stats["broken"] += 1

    async def _watch_close(self, stream: SocketStream, scope: anyio.CancelScope) -> None:
        """The client never speaks after its request: any end of input means it left."""
        try:
            while True:
                await stream.receive(1024)
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            self.stats["closed_by_client"] += 1  # the normal way a page goes away
        scope.cancel()
