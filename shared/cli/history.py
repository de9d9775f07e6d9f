"""Reading a stream's history from the CLI: the last N records, or since a time.

Both ``ringmaster logs`` and ``ringmaster watch --since`` read through a JetStream
*ordered* consumer: ephemeral, flow-controlled, in stream order, re-created by the
client on a gap, and gone when the command ends. It replays what the stream holds
and then keeps delivering new records, so "history, then follow" is one subscription
with no gap and no duplicate between the two.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError

from shared.cli.client import CliError

T = TypeVar("T")
Subscription = JetStreamContext.PushSubscription

#: Seconds to wait for the next message of a replay the server said is pending.
REPLAY_WAIT_S = 10.0

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``--since``: a duration back from now (``90s``, ``10m``, ``2h``, ``1d``) or an
    ISO 8601 time (``2026-12-05T15:00:00Z``; without a zone, local time). CliError (2)."""
    now = now or datetime.now(UTC)
    match = _DURATION.match(text.strip())
    if match:
        return now - timedelta(seconds=float(match.group(1)) * _UNIT_S[match.group(2)])
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise CliError(
            f"--since {text!r}: not a duration (90s, 10m, 2h, 1d) or an ISO 8601 time", 2
        ) from None
    if when.tzinfo is None:
        when = when.astimezone()  # a naive time is the user's local time
    if when > now:
        raise CliError(f"--since {text!r} is in the future", 2)
    return when


async def subscribe_since(
    js: JetStreamContext,
    stream: str,
    subject: str,
    since: datetime,
    callback: Callable[[Msg], Awaitable[None]],
) -> Subscription:
    """An ordered consumer on ``subject`` from the first record at or after ``since``,
    each message handed to ``callback``."""
    config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=since)
    return await js.subscribe(
        subject, stream=stream, ordered_consumer=True, config=config, cb=callback
    )


async def stream_subjects(js: JetStreamContext, stream: str, subject: str) -> dict[str, int]:
    """How many records each subject matching ``subject`` holds; CliError (1) when the
    stream does not exist."""
    try:
        info = await js.stream_info(stream, subjects_filter=subject)
    except NotFoundError:
        raise CliError(f"stream {stream} does not exist: no service has started here yet") from None
    return dict(info.state.subjects or {})


async def last_matching(
    js: JetStreamContext,
    stream: str,
    subject: str,
    count: int,
    decode: Callable[[bytes], T | None],
) -> tuple[list[T], Subscription]:
    """The last ``count`` records on ``subject`` that ``decode`` keeps (None: skipped),
    and the ordered consumer positioned after them, to follow with.

    The window of stream sequences read grows fourfold until it holds ``count`` kept
    records or reaches the stream's start, so a tail costs about what it shows, not
    the whole stream.
    """
    info = await js.stream_info(stream)
    first, last = info.state.first_seq, info.state.last_seq
    if count == 0 or last == 0:
        sub = await js.subscribe(
            subject, stream=stream, ordered_consumer=True, deliver_policy=DeliverPolicy.NEW
        )
        return [], sub
    window = max(4 * count, 256)
    while True:
        start = max(first, last - window + 1)
        config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start)
        sub = await js.subscribe(subject, stream=stream, ordered_consumer=True, config=config)
        kept: deque[T] = deque(maxlen=count)
        pending = (await sub.consumer_info()).num_pending
        while pending:
            msg = await sub.next_msg(timeout=REPLAY_WAIT_S)
            value = decode(msg.data)
            if value is not None:
                kept.append(value)
            meta = msg.metadata
            if meta.sequence.stream >= last or not meta.num_pending:
                break
        if len(kept) >= count or start <= first:
            return list(kept), sub
        await sub.unsubscribe()
        window *= 4
