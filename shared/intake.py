"""Everything a service takes in goes through here: decoded, guarded and counted.

- A message that does not decode, or is over the size limit, is counted per kind,
  logged once per kind, answered with a 400 error reply when it has a reply subject,
  and never reaches the handler.
- A handler that raises a RequestError answers with that typed error; any other
  exception is a bug: counted, logged once per kind, answered with a 500.
- Handlers run in the service's task group under a concurrency limit, so a slow
  request does not hold up its subscription, and stop can wait for in-flight work.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
import msgspec
import nats.errors
from anyio.abc import TaskGroup
from nats.aio.client import Client
from nats.aio.msg import Msg

from shared import tracing
from shared.codec import decode, decode_error_kind, encode
from shared.contracts import ErrorBody, ErrorReply
from shared.errors import BadRequest, RequestError, Unavailable
from shared.micro import EndpointStats
from shared.window import SlidingWindow

log = logging.getLogger("ringmaster.intake")

T = TypeVar("T")
R = TypeVar("R")

ERROR_HEADER = "Nats-Service-Error"
ERROR_CODE_HEADER = "Nats-Service-Error-Code"


class Intake:
    """Counters and guards shared by every subscription and endpoint of a service."""

    def __init__(self, *, window: SlidingWindow, max_bytes: int, concurrency: int) -> None:
        self.window = window
        self.max_bytes = max_bytes
        self.invalid: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.handled = 0
        #: Replies that could not be sent (connection closed or draining).
        self.replies_failed = 0
        self.inflight = 0
        self.accepting = True
        self._sem = anyio.Semaphore(concurrency)
        self._logged: set[str] = set()
        self._tg: TaskGroup | None = None
        self._nc: Client | None = None
        self._idle = anyio.Event()
        self._idle.set()

    def bind(self, tg: TaskGroup, nc: Client) -> None:
        """Run handlers in ``tg`` from now on, and send replies over ``nc`` (the
        connection every message handed to this intake arrives on)."""
        self._tg = tg
        self._nc = nc

    def stats(self) -> dict[str, Any]:
        """Counters for health details."""
        return {
            "handled": self.handled,
            "inflight": self.inflight,
            "invalid": dict(self.invalid),
            "invalid_total": sum(self.invalid.values()),
            "handler_errors": dict(self.errors),
            "replies_failed": self.replies_failed,
        }

    async def wait_idle(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for in-flight handlers to finish."""
        with anyio.move_on_after(timeout):
            await self._idle.wait()
        return self.inflight == 0

    def _log_once(self, key: str, text: str, *args: object) -> None:
        if key not in self._logged:
            self._logged.add(key)
            log.warning(text + " (further ones are only counted)", *args)

    def _decode(self, kind: str, tp: type[T], msg: Msg) -> T:
        if len(msg.data) > self.max_bytes:
            self.invalid[f"{kind}:oversized"] += 1
            self._log_once(
                f"{kind}:oversized", "%s: message of %d bytes over the limit", kind, len(msg.data)
            )
            raise BadRequest(f"message of {len(msg.data)} bytes over the {self.max_bytes} limit")
        try:
            return decode(tp, msg.data or b"{}")
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            label = f"{kind}:{'empty' if not msg.data else decode_error_kind(exc)}"
            self.invalid[label] += 1
            self._log_once(label, "%s: invalid message: %s", kind, exc)
            raise BadRequest(f"invalid {kind} message: {exc}") from exc

    async def _spawn(self, run: Callable[[], Awaitable[None]]) -> None:
        # Backpressure: the subscription waits here when too much is in flight, so
        # its pending queue (and the slow-consumer counter) shows the overload.
        await self._sem.acquire()
        self.inflight += 1
        self._idle = anyio.Event() if self.inflight == 1 else self._idle

        async def guarded() -> None:
            try:
                await run()
            finally:
                self._sem.release()
                self.inflight -= 1
                if self.inflight == 0:
                    self._idle.set()

        if self._tg is None:
            await guarded()
        else:
            self._tg.start_soon(guarded)

    def request_handler(
        self,
        method: str,
        request_type: type[T],
        handler: Callable[[T], Awaitable[Any]],
        stats: Callable[[], EndpointStats | None],
    ) -> Callable[[Msg], Awaitable[None]]:
        """Wrap ``handler`` as a request/reply callback with typed errors."""

        async def run(msg: Msg) -> None:
            start = time.perf_counter_ns()
            error: str | None = None
            try:
                if not self.accepting:
                    raise Unavailable("service is stopping")
                # The caller's trace context, parsed only by handlers that look.
                with tracing.receiving(msg.headers):
                    result = await handler(self._decode(method, request_type, msg))
                if msg.reply:
                    await self._send(msg, encode(result), None)
                self.window.record(True)
            except RequestError as exc:
                error = f"{exc.code}: {exc.message}"
                self.window.record(exc.code < 500)
                await self.reply_error(msg, exc.code, exc.message)
            except Exception as exc:  # noqa: BLE001 - a bug: counted and answered, never fatal
                error = f"500: {type(exc).__name__}: {exc}"
                self.errors[method] += 1
                self.window.record(False)
                self._log_once(
                    f"bug:{method}:{type(exc).__name__}", "%s: handler failed: %r", method, exc
                )
                await self.reply_error(msg, 500, f"internal error: {type(exc).__name__}")
            finally:
                self.handled += 1
                endpoint = stats()
                if endpoint is not None:
                    endpoint.record(time.perf_counter_ns() - start, error)

        async def callback(msg: Msg) -> None:
            await self._spawn(lambda: run(msg))

        return callback

    def message_handler(
        self, kind: str, msg_type: type[T], handler: Callable[[T, Msg], Awaitable[None]]
    ) -> Callable[[Msg], Awaitable[None]]:
        """Wrap ``handler`` as a subscription callback for typed messages."""

        async def run(msg: Msg) -> None:
            try:
                value = self._decode(kind, msg_type, msg)
            except BadRequest as exc:
                await self.reply_error(msg, 400, exc.message)
                return
            try:
                await handler(value, msg)
                self.window.record(True)
            except Exception as exc:  # noqa: BLE001 - a bug: counted, logged, never fatal
                self.errors[kind] += 1
                self.window.record(False)
                self._log_once(
                    f"bug:{kind}:{type(exc).__name__}", "%s: handler failed: %r", kind, exc
                )
            finally:
                self.handled += 1

        async def callback(msg: Msg) -> None:
            await self._spawn(lambda: run(msg))

        return callback

    async def reply_error(self, msg: Msg, code: int, message: str) -> None:
        """Answer ``msg`` (if it has a reply subject) with a typed error; never raises.

        It runs inside ``except`` blocks: a raise here (the connection closed under
        the handler) would escape the handler and end the service's task group.
        """
        if not msg.reply:
            return
        headers = {ERROR_HEADER: message[:200], ERROR_CODE_HEADER: str(code)}
        body = encode(ErrorReply(ErrorBody(code=code, message=message)))
        await self._send(msg, body, headers)

    async def _send(self, msg: Msg, body: bytes, headers: dict[str, str] | None) -> None:
        # Msg.respond cannot carry headers; the micro protocol puts the error there.
        if self._nc is None:
            raise RuntimeError("Intake.bind() first: replies need the connection")
        try:
            await self._nc.publish(msg.reply, body, headers=headers)
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            # The asker gets no answer and times out: nothing else can be done here.
            self.replies_failed += 1
            self._log_once(f"reply:{type(exc).__name__}", "reply not sent: %r", exc)
