"""A bounded, ordered outbox that gets every event acknowledged by JetStream.

``emit`` never raises into the caller. Events are published in order, pipelined in
windows with several windows in flight (the next is sent while the acks of the
earlier ones are still coming), each with a ``Nats-Msg-Id`` so a retry after a
lost acknowledgment is de-duplicated by the stream. The acks are filed by position
into their window by one subscription (``shared/acked.py``), not through a future
per event. When a publish fails (server away, timeout) the flusher backs off and
retries from the first unacknowledged event, so order is kept. Two loss modes are
left, both counted, logged and shown in health: when the outbox is full a new event
is dropped; and an event that can never be published (larger than the server's
max_payload, a subject or header the client refuses, a 400 from the stream such as
its max_msg_size) is dropped at the head of the queue instead of being retried
forever in front of every event behind it.

``publish`` reports whether the event was acknowledged at its first try. A caller
that must not go on without the announcement does not treat False as done: the event
stays queued, and the durable change it announces carries the obligation to announce
it again (see the job manager's announce.py and the training coordinator's decision).
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import deque
from dataclasses import dataclass

import anyio
import msgspec
import nats.errors
import nats.js.errors
from anyio.abc import TaskStatus
from nats.aio.client import Client

from shared.acked import PENDING, AckedPublisher, AckWindow
from shared.histogram import Histogram

log = logging.getLogger("ringmaster.outbox")

#: Refused by the client before it is sent: the same bytes will be refused again.
_UNSENDABLE = (nats.errors.MaxPayloadError, nats.errors.BadSubjectError, nats.errors.BadHeaderError)
#: Refused by the stream with a 400 (too large for the stream, bad headers): ditto. A
#: missing stream (no responders) or a 503 may pass, and is retried.
_REFUSED = (nats.js.errors.BadRequestError,)


class OutboxStats(msgspec.Struct, frozen=True):
    """Counters shown in health details."""

    emitted: int
    acked: int
    dropped: int
    failed_attempts: int
    pending: int
    last_error: str
    #: Of ``dropped``: events that could never be published (dropped, not retried).
    unpublishable: int = 0
    #: Acks that came after their window was given up (the event was sent again).
    late_acks: int = 0


@dataclass(eq=False, slots=True)  # one per event: slots make it cheaper to build
class _Entry:
    subject: str
    payload: bytes
    msg_id: str
    # Made only for callers that wait (publish); emit_nowait's entries need none.
    settled: anyio.Event | None = None
    acked: bool = False
    # When emit queued it: publish latency runs from here to the stream's ack.
    queued_at: float = 0.0
    #: Extra headers (the trace context), sent with the message id.
    headers: dict[str, str] | None = None

    def settle(self) -> None:
        if self.settled is not None:
            self.settled.set()


class Outbox:
    """Ordered, acknowledged publishing of events to JetStream."""

    def __init__(
        self,
        nc: Client,
        *,
        capacity: int = 10_000,
        window: int = 512,
        depth: int = 4,
        ack_timeout: float = 5.0,
        max_backoff: float = 2.0,
    ) -> None:
        self._js = nc.jetstream()
        #: The windows' publishes and their acks (one subscription, no future each).
        self._acks = AckedPublisher(nc)
        self._capacity = capacity
        self._window = window
        #: Windows in flight at once.
        self._depth = depth
        #: Entries at the head of the queue that are sent and await their ack.
        self._sent = 0
        self._ack_timeout = ack_timeout
        self._max_backoff = max_backoff
        self._queue: deque[_Entry] = deque()
        self._wake = anyio.Event()
        self._emitted = self._acked = self._dropped = self._failed = self._poisoned = 0
        self._last_error = ""
        self._drained = anyio.Event()
        self.failing = False
        self.last_drop_at: float | None = None
        #: Emit -> JetStream ack, retries and queueing included (metrics reply).
        self.latency = Histogram(
            "ringmaster_event_publish_seconds", "event emit to JetStream acknowledgment"
        )

    def put(
        self, subject: str, payload: bytes, msg_id: str, headers: dict[str, str] | None = None
    ) -> _Entry | None:
        """Queue one event; None (and counted) when the outbox is full."""
        self._emitted += 1
        if len(self._queue) >= self._capacity:
            self._dropped += 1
            self.last_drop_at = time.monotonic()
            if self._dropped == 1 or self._dropped % 1000 == 0:
                log.error(
                    "outbox full (%d): dropped %d events so far", self._capacity, self._dropped
                )
            return None
        entry = _Entry(subject, payload, msg_id, queued_at=time.monotonic(), headers=headers)
        self._queue.append(entry)
        self._wake.set()
        return entry

    async def publish(
        self, subject: str, payload: bytes, msg_id: str, headers: dict[str, str] | None = None
    ) -> bool:
        """Queue one event and wait until it is acknowledged or its first try failed."""
        entry = self.put(subject, payload, msg_id, headers)
        if entry is None:
            return False
        entry.settled = anyio.Event()
        await entry.settled.wait()
        return entry.acked

    @property
    def pending(self) -> int:
        """Events not yet acknowledged."""
        return len(self._queue)

    def stats(self) -> OutboxStats:
        """Current counters."""
        return OutboxStats(
            emitted=self._emitted,
            acked=self._acked,
            dropped=self._dropped,
            failed_attempts=self._failed,
            pending=len(self._queue),
            last_error=self._last_error,
            unpublishable=self._poisoned,
            late_acks=self._acks.late,
        )

    async def flush(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the outbox to empty; True if it did."""
        with anyio.move_on_after(timeout):
            while self._queue:
                self._drained = anyio.Event()
                await self._drained.wait()
        return not self._queue

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """The flusher; runs until cancelled."""
        await self._acks.start()
        task_status.started()
        try:
            await self._flush_forever()
        finally:
            with anyio.CancelScope(shield=True):
                await self._acks.stop()

    async def _flush_forever(self) -> None:
        backoff = 0.05
        while True:
            if not self._queue:
                self._drained.set()
                self._wake = anyio.Event()
                await self._wake.wait()
                continue
            if await self._send_window() or await self._probe_head():
                self.failing = False
                backoff = 0.05
            else:
                await anyio.sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff)

    async def _send_window(self) -> bool:
        """Send and settle every queued event, ``depth`` windows in flight.

        False when a failure calls for a look at the head (``_probe_head``) and, if
        that fails too, a backoff.
        """
        windows: deque[tuple[AckWindow, list[_Entry]]] = deque()
        ok, poison = True, None
        try:
            while True:
                while ok and len(windows) < self._depth and self._sent < len(self._queue):
                    window, entries, ok, poison = await self._send_next()
                    windows.append((window, entries))
                if not windows:
                    if poison is not None:
                        # Everything before it is acked, so it is the head: drop it, or
                        # it blocks all.
                        self._drop_head(poison)
                        return True
                    return ok
                if not await self._settle(*windows.popleft()):
                    return False
        finally:
            # Whatever is still out is given up on: it is sent again (same id) on retry.
            for window, entries in windows:
                self._acks.close(window)
                for entry in entries:
                    entry.settle()
            self._sent = 0

    async def _send_next(
        self,
    ) -> tuple[AckWindow, list[_Entry], bool, BaseException | None]:
        """Publish the next window of unsent entries.

        Also returns False when a publish failed, and the error when the next entry can
        never be sent (it is not sent, and nothing after it).
        """
        start = self._sent
        batch = list(itertools.islice(self._queue, start, start + self._window))
        window = self._acks.window(len(batch))
        sent: list[_Entry] = []
        ok, poison = True, None
        try:
            for position, entry in enumerate(batch):
                headers = {"Nats-Msg-Id": entry.msg_id}
                if entry.headers:
                    headers.update(entry.headers)
                try:
                    await self._acks.publish(
                        window, position, entry.subject, entry.payload, headers
                    )
                except _UNSENDABLE as exc:
                    ok, poison = False, exc
                    break
                sent.append(entry)
                self._sent += 1
        except (OSError, nats.errors.Error) as exc:
            self._note_failure(exc)
            ok = False
        window.trim(len(sent))
        return window, sent, ok, poison

    async def _settle(self, window: AckWindow, entries: list[_Entry]) -> bool:
        """Await one window's acks, dequeuing each acked entry in order; False on failure."""
        try:
            if not entries:  # its first publish failed: nothing went out
                return True
            # One wake-up for the whole window (a suspension per ack costs more than
            # the ack), and one deadline; then count the acks in order to the first miss.
            with anyio.move_on_after(self._ack_timeout):
                await window.done.wait()
        finally:
            self._acks.close(window)
        acked, refused = 0, None
        for outcome in window.outcomes:
            if outcome is PENDING:
                self._note_failure(TimeoutError(f"no ack in {self._ack_timeout:g}s"))
                break
            if isinstance(outcome, _REFUSED):
                refused = outcome
                break
            if isinstance(outcome, BaseException):
                self._note_failure(outcome)
                break
            acked += 1
        now = time.monotonic()
        for _ in range(acked):
            entry = self._queue.popleft()
            self.latency.observe(now - entry.queued_at)
            entry.acked = True
            entry.settle()
        self._sent -= acked
        self._acked += acked
        if acked == len(entries):
            return True
        rest = entries[acked:]
        if refused is not None:
            # Everything before it is acked, so it is the head: drop it, or it blocks all.
            self._drop_head(refused)
            self._sent -= 1
            rest = rest[1:]
        # What is left waits for the retry; its callers learn it is not acked yet.
        for entry in rest:
            entry.settle()
        return False

    async def _probe_head(self) -> bool:
        """Send the head event alone, awaited; True when it was acked or dropped.

        After a window failed (no ack in time, no stream, the connection lost), this
        tells a server that is away from one that answers, before backing off; a 400
        it gets drops the head as the window's own acks would.
        """
        if not self._queue:
            return True  # the window ended on a refusal, already dropped: nothing failed
        entry = self._queue[0]
        try:
            await self._js.publish(
                entry.subject,
                entry.payload,
                timeout=self._ack_timeout,
                headers={"Nats-Msg-Id": entry.msg_id, **(entry.headers or {})},
            )
        except (*_UNSENDABLE, *_REFUSED) as exc:
            self._drop_head(exc)
            return True
        except (OSError, TimeoutError, nats.errors.Error) as exc:
            self._note_failure(exc)
            return False
        self._queue.popleft()
        self.latency.observe(time.monotonic() - entry.queued_at)
        entry.acked = True
        entry.settle()
        self._acked += 1
        return True

    def _drop_head(self, exc: BaseException) -> None:
        entry = self._queue.popleft()
        entry.settle()
        self._dropped += 1
        self._poisoned += 1
        self.last_drop_at = time.monotonic()
        self._last_error = f"{type(exc).__name__}: {exc}"
        log.error(
            "event %s on %s (%d bytes) can never be published, dropped (%d so far): %s",
            entry.msg_id,
            entry.subject,
            len(entry.payload),
            self._poisoned,
            self._last_error,
        )

    def _note_failure(self, exc: BaseException) -> None:
        self.failing = True
        self._failed += 1
        text = f"{type(exc).__name__}: {exc}"
        if text != self._last_error:
            log.warning("event publish failed, will retry in order: %s", text)
        self._last_error = text
