"""Pipelined JetStream publishing with one ack subscription and no future per message.

nats-py's ``publish_async`` makes, for every message, a NUID token, a future with a
done-callback, a semaphore acquisition and an entry in a dict, and decodes every ack
with the stdlib ``json`` and a dataclass built field by field. The outbox sends whole
windows and waits for a window at a time, so :class:`AckWindow` keeps one slot per
message and one wake-up per window instead: the reply subject is the publisher's inbox
plus a running number, and one subscription files each ack into its window's slot
(decoded by msgspec). The server's answers are the same ones ``publish_async`` gets: a
PubAck, an API error (a 400 means the stream refuses this message for good), or a
no-responders status when no stream takes the subject; each becomes the exception
nats-py would raise for it.
"""

from __future__ import annotations

import logging

import anyio
import msgspec
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

log = logging.getLogger("ringmaster.outbox")

#: A no-responders status on the reply: no stream captures the subject (yet).
_NO_RESPONDERS = "503"


class _ApiError(msgspec.Struct):
    code: int = 0
    err_code: int = 0
    description: str = ""


class _Ack(msgspec.Struct):
    stream: str = ""
    seq: int = 0
    duplicate: bool = False
    error: _ApiError | None = None


_decode_ack = msgspec.json.Decoder(_Ack).decode


#: What a slot holds once its ack came: None for stored, else why not.
Outcome = BaseException | None
#: What a slot holds until its ack comes.
PENDING = object()


class AckWindow:
    """The acks of one window of messages, filed by position."""

    __slots__ = ("base", "done", "left", "outcomes", "size")

    def __init__(self, base: int, size: int) -> None:
        self.base = base
        self.size = size
        #: One per message, in order; PENDING until its ack arrives.
        self.outcomes: list[Outcome | object] = [PENDING] * size
        self.left = size
        self.done = anyio.Event()

    def file(self, position: int, outcome: Outcome) -> None:
        """Record the ack of the message at ``position`` (a repeat is ignored)."""
        if self.outcomes[position] is PENDING:
            self.outcomes[position] = outcome
            self.left -= 1
            if self.left == 0:
                self.done.set()

    def trim(self, sent: int) -> None:
        """Only the first ``sent`` messages went out: wait for their acks alone."""
        self.left -= self.size - sent
        del self.outcomes[sent:]
        self.size = sent
        if self.left == 0:
            self.done.set()


class AckedPublisher:
    """Publishes with a reply subject per message and files the acks into windows."""

    def __init__(self, nc: Client) -> None:
        self._nc = nc
        self._prefix = ""
        self._sub: Subscription | None = None
        self._next = 0
        self._open: list[AckWindow] = []
        #: Acks that came after their window was settled or given up (the event is
        #: sent again and the stream keeps one copy), and replies that are not acks
        #: of ours: counted, nothing waits for them.
        self.late = 0

    async def start(self) -> None:
        """Subscribe to the acks (once; the subscription survives reconnects)."""
        if self._sub is None:
            self._prefix = self._nc.new_inbox() + "."
            self._sub = await self._nc.subscribe(self._prefix + "*", cb=self._on_ack)

    async def stop(self) -> None:
        """Unsubscribe; windows still open are left to their deadlines."""
        if self._sub is not None:
            sub, self._sub = self._sub, None
            try:
                await sub.unsubscribe()
            except nats.errors.Error as exc:
                # The connection is closing with the service: the server drops it anyway.
                log.info("ack subscription not removed: %r", exc)

    def window(self, size: int) -> AckWindow:
        """A new window of ``size`` messages, numbered after every earlier one."""
        window = AckWindow(self._next, size)
        self._next += size
        self._open.append(window)
        return window

    def close(self, window: AckWindow) -> None:
        """Stop filing acks for ``window`` (settled or given up)."""
        self._open.remove(window)

    async def publish(
        self,
        window: AckWindow,
        position: int,
        subject: str,
        payload: bytes,
        headers: dict[str, str],
    ) -> None:
        """Publish the message at ``position`` of ``window``; its ack is filed there."""
        reply = f"{self._prefix}{window.base + position}"
        await self._nc.publish(subject, payload, reply=reply, headers=headers)

    async def _on_ack(self, msg: Msg) -> None:
        try:
            number = int(msg.subject[len(self._prefix) :])
        except ValueError:
            number = -1
        for window in self._open:
            if window.base <= number < window.base + window.size:
                window.file(number - window.base, outcome(msg))
                return
        self.late += 1


def outcome(msg: Msg) -> Outcome:
    """What one reply to a publish says: stored (None), or the error nats-py would give.

    A 400 is ``BadRequestError`` (the stream refuses this message for good); no
    responders is ``NoStreamResponseError``; any other error is an ``APIError``.
    """
    if msg.headers and msg.headers.get("Status") == _NO_RESPONDERS:
        return nats.js.errors.NoStreamResponseError()
    try:
        ack = _decode_ack(msg.data)
    except msgspec.DecodeError as exc:
        return nats.js.errors.APIError(description=f"unreadable ack: {exc}")
    err = ack.error
    if err is None:
        return None
    kind = nats.js.errors.BadRequestError if err.code == 400 else nats.js.errors.APIError
    return kind(code=err.code, description=err.description, err_code=err.err_code)
