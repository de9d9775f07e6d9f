"""Durable consumption of events from ``P_EVENTS``: nothing missed across restarts.

A service that reacts to other services' events (a selfplay job completed, a model
promoted) must not lose one while it is down or restarting. It reads them through a
durable pull consumer with explicit acks: an event is acked only after its handler
succeeded; a handler that fails gets the event again later (nak with a delay), and
the failure is counted. The consumer is created idempotently and re-bound when a
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
    ) -> None:
        self._js = js
        self.stream = stream
        self.durable = durable
        self._filters = filter_subjects
        self._handler = handler
        self._batch = batch
        self._ack_wait_s = ack_wait_s
        self._retry_delay_s = retry_delay_s
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
            await self._handler(event)
        except Exception as exc:  # noqa: BLE001 - counted; the event comes back later
            self.counts["handler_errors"] += 1
            log.warning("%s: handling %s failed (%r); will retry", self.durable, event.type, exc)
            await msg.nak(delay=self._retry_delay_s)
            return
        self.counts["handled"] += 1
        await msg.ack()

    def stats(self) -> dict[str, int]:
        """Counters for health details."""
        return dict(self.counts)
