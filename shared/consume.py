"""Durable consumption of events from ``P_EVENTS``: nothing missed across restarts.

A service that reacts to other services' events (a selfplay job completed, a model
promoted) must not lose one while it is down or restarting. It reads them through a
durable pull consumer with explicit acks: an event is acked only after its handler
succeeded; a handler that fails gets the event again later (nak with a delay), and
the failure is counted. Deliveries are bounded: an event whose handler failed
``max_deliveries`` times is a poison event, terminated (AckTerm) so it cannot hold
the consumer's unacknowledged slots forever, counted as ``poison`` in the health
details and logged once. The consumer is created idempotently and re-bound when a
fetch finds it gone (after a server restart without it, for example).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable

import anyio
import msgspec
import nats.errors
import nats.js.errors
from anyio.abc import TaskStatus
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext

from shared import tracing
from shared.codec import decode, decode_error_kind
from shared.contracts import Event

log = logging.getLogger("ringmaster.consume")

Handler = Callable[[Event], Awaitable[None]]


class EventConsumer:
    """Feeds every event on ``filter_subjects`` to ``handler`` at least once.

    Events arrive in stream order; one whose handler failed comes back after
    ``retry_delay_s``, behind those that followed it.
    """

    def __init__(
        self,
        js: JetStreamContext,
        *,
        stream: str,
        durable: str,
        filter_subjects: list[str],
        handler: Handler,
        batch: int = 64,
        ack_wait_s: float = 30.0,
        retry_delay_s: float = 2.0,
        deliver_new: bool = False,
        max_deliveries: int = 5,
    ) -> None:
        if max_deliveries < 1:
            raise ValueError("max_deliveries must be at least 1")
        self._js = js
        self.stream = stream
        self.durable = durable
        self._filters = filter_subjects
        self._handler = handler
        self._batch = batch
        self._ack_wait_s = ack_wait_s
        self._retry_delay_s = retry_delay_s
        self.max_deliveries = max_deliveries
        self._deliver = DeliverPolicy.NEW if deliver_new else DeliverPolicy.ALL
        self.counts: Counter[str] = Counter()
        self._logged: set[str] = set()

    def _config(self) -> ConsumerConfig:
        return ConsumerConfig(
            durable_name=self.durable,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=self._deliver,
            ack_wait=self._ack_wait_s,
            max_ack_pending=self._batch * 4,
            filter_subjects=self._filters,
        )

    async def _bind(self) -> nats.js.JetStreamContext.PullSubscription:
        await self._js.add_consumer(self.stream, self._config())
        return await self._js.pull_subscribe_bind(self.durable, stream=self.stream)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Consume until cancelled; ready once the consumer exists."""
        sub = await self._bind()
        task_status.started()
        try:
            while True:
                try:
                    msgs = await sub.fetch(self._batch, timeout=1.0)
                except TimeoutError:  # nats-py raises its own subclass, or the builtin
                    continue
                except (nats.js.errors.NotFoundError, nats.errors.Error) as exc:
                    self.counts["rebinds"] += 1
                    log.warning("%s: consumer unusable (%s); binding again", self.durable, exc)
                    await anyio.sleep(self._retry_delay_s)
                    sub = await self._rebind(sub)
                    continue
                for msg in msgs:
                    await self._deliver_one(msg)
        finally:
            with anyio.CancelScope(shield=True):
                await sub.unsubscribe()

    async def _rebind(
        self, old: nats.js.JetStreamContext.PullSubscription
    ) -> nats.js.JetStreamContext.PullSubscription:
        try:
            await old.unsubscribe()
        except nats.errors.Error as exc:
            log.debug("%s: unsubscribing the old binding: %s", self.durable, exc)
        try:
            return await self._bind()
        except nats.errors.Error as exc:
            self.counts["bind_failures"] += 1
            log.warning("%s: cannot bind yet: %s", self.durable, exc)
            return old

    async def _deliver_one(self, msg: Msg) -> None:
        try:
            event = decode(Event, msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            # Not ours to fix and never going to decode: count it and move on.
            self.counts["invalid"] += 1
            # Logged once per subject and kind: garbage must not flood the log.
            kind = f"{msg.subject}:{decode_error_kind(exc)}"
            if kind not in self._logged:
                self._logged.add(kind)
                log.warning(
                    "%s: undecodable event on %s: %s (further ones are only counted)",
                    self.durable,
                    msg.subject,
                    exc,
                )
            await msg.term()
            return
        try:
            # The event's trace context, for handlers that continue it (tracing.incoming).
            with tracing.receiving(msg.headers):
                await self._handler(event)
        except Exception as exc:  # noqa: BLE001 - counted; the event comes back later
            self.counts["handler_errors"] += 1
            await self._failed(msg, event, exc)
            return
        self.counts["handled"] += 1
        await msg.ack()

    async def _failed(self, msg: Msg, event: Event, exc: Exception) -> None:
        """Retry a failed event later, or terminate it past ``max_deliveries``."""
        if msg.metadata.num_delivered < self.max_deliveries:
            self._log_once(
                f"retry:{event.type}:{type(exc).__name__}",
                "handling %s failed (%r); will retry",
                event.type,
                exc,
            )
            await msg.nak(delay=self._retry_delay_s)
            return
        # Poison: redelivering it forever would hold one of the consumer's
        # unacknowledged slots for good, and enough of them stop the consumer.
        self.counts["poison"] += 1
        self._log_once(
            "poison",
            "gave up on %s (id %s) after %d deliveries, last error %r",
            event.type,
            event.id,
            msg.metadata.num_delivered,
            exc,
            level=logging.ERROR,
        )
        await msg.term()

    def _log_once(self, key: str, text: str, *args: object, level: int = logging.WARNING) -> None:
        if key not in self._logged:
            self._logged.add(key)
            log.log(level, "%s: " + text + " (further ones are only counted)", self.durable, *args)

    def stats(self) -> dict[str, int]:
        """Counters for health details."""
        return dict(self.counts)
