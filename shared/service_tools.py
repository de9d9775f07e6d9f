"""What a manager uses of its Service while it runs: the bus, its task group, typed
subscriptions and endpoints, buckets, loops, breakers and events.

``ServiceTools`` is the base of :class:`shared.service.Service`, which sets every
attribute declared here and runs the lifecycle around them; a manager calls these
from ``setup()`` and its handlers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ClassVar, TypeVar

from anyio.abc import TaskGroup
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.client import JetStreamContext
from nats.js.kv import KeyValue

from shared.circuit_breaker import CircuitBreaker
from shared.config import BaseConfig
from shared.emitter import EventEmitter
from shared.events import EventData
from shared.intake import Intake
from shared.loops import Loop
from shared.micro import MicroService
from shared.outbox import Outbox
from shared.provision import catalogue_bucket
from shared.subjects import Subjects

T = TypeVar("T")


class ServiceTools:
    """The running service's handles and the calls a manager makes on them."""

    name: ClassVar[str]
    config: BaseConfig
    subjects: Subjects
    instance: str
    intake: Intake
    intake_types: dict[str, type[Any]]
    loops: list[Loop]
    breakers: list[CircuitBreaker]
    emitter: EventEmitter
    _subscriptions: list[Subscription]
    _nc: Client | None
    _js: JetStreamContext | None
    _tg: TaskGroup | None
    _outbox: Outbox | None
    _micro: MicroService | None

    @property
    def nc(self) -> Client:
        """The NATS connection (only while running)."""
        if self._nc is None:
            raise RuntimeError(f"{self.name} is not running")
        return self._nc

    @property
    def js(self) -> JetStreamContext:
        """The JetStream context (only while running)."""
        if self._js is None:
            raise RuntimeError(f"{self.name} is not running")
        return self._js

    @property
    def tg(self) -> TaskGroup:
        """The service's task group (only while running)."""
        if self._tg is None:
            raise RuntimeError(f"{self.name} is not running")
        return self._tg

    @property
    def connection(self) -> Client | None:
        """The NATS connection, None before it is made (``nc`` raises instead)."""
        return self._nc

    @property
    def outbox_if_running(self) -> Outbox | None:
        """The event outbox, None before the service runs (``outbox`` raises instead)."""
        return self._outbox

    @property
    def outbox(self) -> Outbox:
        """The event outbox (only while running)."""
        if self._outbox is None:
            raise RuntimeError(f"{self.name} is not running")
        return self._outbox

    async def subscribe(
        self,
        subject: str,
        msg_type: type[T],
        handler: Callable[[T, Msg], Awaitable[None]],
        *,
        kind: str | None = None,
        queue: str = "",
    ) -> Subscription:
        """Subscribe with a typed decoder; bad messages are counted, never fatal."""
        callback = self.intake.message_handler(kind or subject, msg_type, handler)
        sub = await self.nc.subscribe(subject, queue=queue, cb=callback)
        self.intake_types[subject] = msg_type
        self._subscriptions.append(sub)
        return sub

    async def add_endpoint(
        self,
        method: str,
        request_type: type[T],
        handler: Callable[[T], Awaitable[Any]],
        *,
        per_instance: bool = False,
    ) -> None:
        """A micro endpoint on ``P.api.<service>.<method>`` (load-balanced by queue group)."""
        micro = self._micro
        if micro is None:
            raise RuntimeError("endpoints are added in setup()")
        if per_instance:
            subject = self.subjects.instance_api(self.name, self.instance, method)
        else:
            subject = self.subjects.api(self.name, method)
        name = f"{method}-instance" if per_instance else method
        callback = self.intake.request_handler(
            method, request_type, handler, lambda: micro.endpoints.get(name)
        )
        await micro.add_endpoint(name, subject, callback, queue_group=None if per_instance else "q")
        self.intake_types[subject] = request_type

    async def bucket(self, name: str) -> KeyValue:
        """The catalogue's KV bucket ``name`` (short name), created as specified if missing."""
        return await catalogue_bucket(self.js, self.subjects, name, self.config)

    def add_loop(self, loop: Loop) -> Loop:
        """Run ``loop`` in the task group while the service runs (add in setup())."""
        self.loops.append(loop)
        return loop

    def add_breaker(self, breaker: CircuitBreaker) -> CircuitBreaker:
        """Show ``breaker`` in health; an open one makes the service DEGRADED."""
        self.breakers.append(breaker)
        return breaker

    def spawn(self, func: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run long work in the service's task group, off the subscription's callback."""
        self.tg.start_soon(func)

    async def emit(self, data: EventData, *, subject: str | None = None, msg_id: str = "") -> bool:
        """Publish an event and wait for its ack; never raises. False: queued for retry.

        ``msg_id`` makes it an announcement of a durable change: the id is the event's
        ``Nats-Msg-Id``, so a repeat (after a crash, by another instance) is one event.
        Inside ``tracing.use(ctx)`` the event carries ``ctx`` in its headers.
        """
        headers = self.emitter.headers(data)
        return await self.outbox.publish(*self.emitter.build(data, subject, msg_id), headers)

    def emit_nowait(self, data: EventData, *, subject: str | None = None) -> bool:
        """Queue an event for acknowledged publishing; False if the outbox is full."""
        headers = self.emitter.headers(data)
        return self.outbox.put(*self.emitter.build(data, subject), headers) is not None
