"""Sending bad input to one running service and collecting its answers.

Every message that has a reply subject gets its own (``<inbox>.<n>``) on one wildcard
inbox subscription, so every answer is matched to its message, and a message that
JetStream also stores (its ack arrives on the same reply subject) is still judged by
the service's answer.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg

from chaos.listeners import Listener
from chaos.payloads import (
    field_names,
    is_valid,
    minimal_event,
    minimal_valid,
    oversized,
    random_bytes,
    wrong_schema,
)
from shared.contracts import ControlCommand
from shared.intake import ERROR_CODE_HEADER
from shared.service import Service

#: hypothesis draws at most this many wrong-schema messages per type; mutations do the rest.
POOL = 200
#: Messages sent before waiting for the service to catch up.
CHUNK = 256
#: Values of the wrong type for any field, mixed into objects with the type's own keys.
ODD: list[Any] = [None, True, -1, 0, 2**70, 1e308, -0.5, "", "x" * 50, [], {}, [None], {"a": 1}]
#: Stream-kind messages are not size-checked by a decoder limit; none of them is valid.
NO_LIMIT = 1 << 30
#: Trace headers no parser may accept: empty, unknown version, short, zero ids, not hex.
_BAD_TRACEPARENTS = (
    "",
    "ff-" + "1" * 32 + "-" + "2" * 16 + "-01",
    "00-abc-def-01",
    "00-" + "0" * 32 + "-" + "0" * 16 + "-01",
    "00-" + "z" * 32 + "-" + "2" * 16 + "-01",
)


#: hypothesis pools by type, shared by every service fed in this process (drawing is slow).
POOLS: dict[type[Any], list[bytes]] = {}


@dataclass
class Sent:
    """What was sent to one service, and what came back."""

    per_subject: Counter[str] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)
    invalid_core: int = 0
    invalid_stream: int = 0
    to_events: int = 0
    total: int = 0
    #: reply number -> subject, for every invalid message that had a reply subject.
    awaiting: dict[int, str] = field(default_factory=dict)
    #: reply number -> the error codes that came back.
    answers: dict[int, list[str]] = field(default_factory=dict)

    def reply_problems(self) -> list[str]:
        """Subjects where an invalid message got no error reply."""
        missing = Counter(s for n, s in self.awaiting.items() if not self.answers.get(n))
        return [f"{s}: {n} invalid messages without an error reply" for s, n in missing.items()]


class Feed:
    """Bad input for one service's listeners."""

    def __init__(
        self,
        nc: Client,
        svc: Service[Any],
        listeners: list[Listener],
        limit: int,
        rng: random.Random,
        patience: float = 30.0,
    ) -> None:
        #: How long to wait for answers and counters that should come (a bound on a hang).
        self.patience = patience
        self.nc = nc
        self.svc = svc
        self.listeners = listeners
        self.limit = limit
        self.rng = rng
        self.inbox = f"_INBOX.badinput.{rng.randrange(1 << 40):x}"
        self.replay: dict[str, bytes] = {}
        self.pools = POOLS
        self._n = 0
        self.sent = Sent()

    async def events_seq(self) -> int:
        """The event stream's last sequence number."""
        info = await self.nc.jetstream().stream_info(self.svc.subjects.events_stream)
        return int(info.state.last_seq)

    def _replayable(self, listener: Listener) -> bytes | None:
        # A valid control command is obeyed by design (stop, drain): never replayed here.
        if listener.type is ControlCommand:
            return None
        if listener.kind == "stream":
            return minimal_event(listener.subject, self.svc.subjects.prefix)
        return minimal_valid(listener.type, self._limit(listener))

    def _limit(self, listener: Listener) -> int:
        return NO_LIMIT if listener.kind == "stream" else self.limit

    async def quiet(self) -> None:
        """Wait for a loop run that began before the pause to end, and its events to go."""
        for loop in self.svc.loops:
            # A paused loop starts no run; its lock is held only by one under way.
            async with loop._lock:
                pass
        await self.svc.outbox.flush(30.0)

    async def originals(self) -> None:
        """Send each listener's valid message once: the original the replays repeat."""
        for listener in self.listeners:
            payload = self._replayable(listener)
            if payload is None:
                continue
            self.replay[listener.subject] = payload
            if listener.kind == "request":
                await self.nc.request(listener.subject, payload, timeout=5.0)
            else:
                await self.nc.publish(listener.subject, payload)
        await self._idle()

    def _wrong(self, listener: Listener, count: int) -> list[bytes]:
        pool = self.pools.get(listener.type)
        if pool is None:
            limit = self._limit(listener)
            pool = wrong_schema(listener.type, min(count, POOL), self.rng.randrange(1 << 32), limit)
            self.pools[listener.type] = pool
        out = list(pool[:count])
        names = field_names(listener.type) or ["x"]
        limit = self._limit(listener)
        for _ in range(count * 10):  # bounded: a type may accept almost any object
            if len(out) >= count:
                break
            keys = self.rng.sample(names, self.rng.randint(1, len(names)))
            value: Any = {k: self.rng.choice(ODD) for k in keys}
            payload = msgspec.json.encode(value)
            if is_valid(listener.type, payload, limit):
                # Accepted as an object (unknown keys are ignored): the same inside an
                # array is the wrong shape for any Struct.
                payload = msgspec.json.encode([value])
            if not is_valid(listener.type, payload, limit):
                out.append(payload)
        return out

    def payloads(self, listener: Listener, per_subject: int) -> list[tuple[str, bytes]]:
        """``per_subject`` messages of every kind for one listener, shuffled."""
        limit = self._limit(listener)
        replays = max(1, per_subject // 10) if listener.subject in self.replay else 0
        oversize = max(1, per_subject // 20)
        wrong = max(1, per_subject * 2 // 5)
        noise = max(1, per_subject - replays - oversize - wrong - 1)
        batch = [("empty", b"")]
        batch += [("oversize", oversized(self.rng, self.limit)) for _ in range(oversize)]
        batch += [("replay", self.replay[listener.subject]) for _ in range(replays)]
        batch += [("wrong_schema", p) for p in self._wrong(listener, wrong)]
        batch += [("random", random_bytes(self.rng, listener.type, limit)) for _ in range(noise)]
        self.rng.shuffle(batch)
        return batch

    async def garbage(self, per_subject: int) -> Sent:
        """Send every listener its bad input; what was sent."""
        sub = await self.nc.subscribe(f"{self.inbox}.*", cb=self._on_reply)
        try:
            for listener in self.listeners:
                for i, (kind, payload) in enumerate(self.payloads(listener, per_subject)):
                    await self._send(listener, kind, payload)
                    if i % CHUNK == CHUNK - 1:
                        await self._idle()
            await self._idle()
            await self._replies()
        finally:
            await sub.unsubscribe()
        return self.sent

    async def _send(self, listener: Listener, kind: str, payload: bytes) -> None:
        sent = self.sent
        valid = is_valid(listener.type, payload, self._limit(listener))
        sent.total += 1
        sent.per_subject[listener.subject] += 1
        sent.kinds[kind] += 1
        if listener.subject.startswith(self.svc.subjects.events[:-1]):
            sent.to_events += 1
        reply = ""
        if not valid and listener.kind == "stream":
            sent.invalid_stream += 1
        elif not valid:
            sent.invalid_core += 1
            self._n += 1
            reply = f"{self.inbox}.{self._n}"
            sent.awaiting[self._n] = listener.subject
        elif listener.kind == "request":
            self._n += 1
            reply = f"{self.inbox}.{self._n}"  # a valid request is answered, not judged here
        # Every other message also carries a malformed trace header: a handler that reads
        # it (submit, reports, event consumers) must count it and carry on.
        bad = _BAD_TRACEPARENTS[sent.total % len(_BAD_TRACEPARENTS)] if sent.total % 2 else None
        headers = {"traceparent": bad} if bad is not None else None
        await self.nc.publish(listener.subject, payload, reply=reply, headers=headers)

    async def _on_reply(self, msg: Msg) -> None:
        number = int(msg.subject.rsplit(".", 1)[1])
        code = (msg.headers or {}).get(ERROR_CODE_HEADER)
        if code is not None:
            self.sent.answers.setdefault(number, []).append(code)

    async def _idle(self) -> None:
        await self.nc.flush()
        # Messages already read off the socket are in the handlers or the pending queue.
        await anyio.sleep(0.05)
        await self.svc.intake.wait_idle(30.0)
        await self.svc.outbox.flush(30.0)

    async def _replies(self) -> None:
        deadline = time.monotonic() + self.patience
        while time.monotonic() < deadline:
            if all(self.sent.answers.get(n) for n in self.sent.awaiting):
                return
            await anyio.sleep(0.05)

    async def settle(
        self,
        health: Callable[[], Awaitable[dict[str, Any]]],
        intake_expected: int,
        consumer_expected: int,
    ) -> dict[str, Any]:
        """Health details once the counters reached what was sent (or after a bound)."""
        from chaos.badinput import consumer_invalid, intake_invalid

        details = await health()
        with anyio.move_on_after(self.patience):
            while (
                intake_invalid(details) < intake_expected
                or consumer_invalid(details) < consumer_expected
            ):
                await anyio.sleep(0.2)
                details = await health()
        return details
