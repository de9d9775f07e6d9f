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
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError

from shared.cli.client import CliError

T = TypeVar("T")
Subscription = JetStreamContext.PushSubscription

#: Seconds to wait for messages of a replay the server said are pending.
REPLAY_WAIT_S = 10.0
#: Messages asked for in one pull of a replay.
FETCH_BATCH = 256
#: The server removes a replay's consumer this long after its last use (if the CLI
#: died before deleting it).
INACTIVE_S = 30.0

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
) -> tuple[list[T], int]:
    """The last ``count`` records on ``subject`` that ``decode`` keeps (None: skipped),
    and the stream sequence they were read up to (to follow from the next one).

    The window of stream sequences read grows fourfold until it holds ``count`` kept
    records or reaches the stream's start, so a tail costs about what it shows, not
    the whole stream.
    """
    info = await js.stream_info(stream)
    first, last = info.state.first_seq, info.state.last_seq
    if count == 0 or last == 0:
        return [], last
    window = max(4 * count, 256)
    while True:
        start = max(first, last - window + 1)
        kept: deque[T] = deque(maxlen=count)
        await _read_window(js, stream, subject, (start, last), decode, kept)
        if len(kept) >= count or start <= first:
            return list(kept), last
        window *= 4


async def _read_window(
    js: JetStreamContext,
    stream: str,
    subject: str,
    window: tuple[int, int],
    decode: Callable[[bytes], T | None],
    kept: deque[T],
) -> None:
    # A pull consumer: its pending count is exact when it is created, as nothing is
    # delivered before a fetch (a push consumer may have delivered all already).
    start, last = window
    config = ConsumerConfig(
        deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
        opt_start_seq=start,
        ack_policy=AckPolicy.NONE,
        inactive_threshold=INACTIVE_S,
    )
    psub = await js.pull_subscribe(subject, stream=stream, config=config)
    try:
        pending = (await psub.consumer_info()).num_pending or 0
        while pending > 0:
            for msg in await psub.fetch(batch=min(pending, FETCH_BATCH), timeout=REPLAY_WAIT_S):
                pending -= 1
                if msg.metadata.sequence.stream > last:
                    return  # past the snapshot: the follow consumer shows it
                value = decode(msg.data)
                if value is not None:
                    kept.append(value)
    finally:
        await psub.unsubscribe()


async def follow_after(
    js: JetStreamContext,
    stream: str,
    subject: str,
    after: int,
) -> Subscription:
    """An ordered consumer on ``subject`` from stream sequence ``after + 1`` on."""
    config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=after + 1)
    return await js.subscribe(subject, stream=stream, ordered_consumer=True, config=config)
