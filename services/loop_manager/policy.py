"""Pure judgements of the loop manager: stream usage and loop health. No I/O here."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from shared.loops import LoopStats


class StreamUsage(msgspec.Struct, frozen=True, kw_only=True):
    """How full a stream is against its configured limits.

    A limit of ``None`` is unlimited (JetStream reports -1, some clients 0 or nothing),
    and then its ratio is ``None`` too. ``over`` names the limits whose usage is above
    ``warn`` (``"bytes"``, ``"messages"``), in that order.
    """

    messages: int
    bytes: int
    max_msgs: int | None
    max_bytes: int | None
    max_age_s: float | None
    msgs_ratio: float | None
    bytes_ratio: float | None
    warn: float
    over: list[str]


def _limit(value: float | None) -> float | None:
    # JetStream uses -1 for "no limit"; 0 and a missing value mean the same.
    if value is None or value <= 0:
        return None
    return value


def judge_stream_usage(
    *,
    messages: int,
    bytes_: int,
    max_msgs: int | None,
    max_bytes: int | None,
    max_age_s: float | None,
    warn: float,
) -> StreamUsage:
    """Usage ratios of a stream and which limits it is nearly at (ratio above ``warn``)."""
    if messages < 0 or bytes_ < 0:
        raise ValueError(f"stream counts cannot be negative: {messages} msgs, {bytes_} bytes")
    if not 0 < warn <= 1:
        raise ValueError(f"warn must be in (0, 1], got {warn}")
    msgs_limit, bytes_limit = _limit(max_msgs), _limit(max_bytes)
    msgs_ratio = messages / msgs_limit if msgs_limit else None
    bytes_ratio = bytes_ / bytes_limit if bytes_limit else None
    over = [
        name
        for name, ratio in (("bytes", bytes_ratio), ("messages", msgs_ratio))
        if ratio is not None and ratio > warn
    ]
    return StreamUsage(
        messages=messages,
        bytes=bytes_,
        max_msgs=int(msgs_limit) if msgs_limit else None,
        max_bytes=int(bytes_limit) if bytes_limit else None,
        max_age_s=_limit(max_age_s),
        msgs_ratio=msgs_ratio,
        bytes_ratio=bytes_ratio,
        warn=warn,
        over=over,
    )


def usage_warnings(stream: str, usage: StreamUsage) -> list[str]:
    """One line per limit the stream is nearly at; empty when it is fine."""
    lines = []
    for name in usage.over:
        if name == "bytes":
            ratio, used, limit = usage.bytes_ratio, usage.bytes, usage.max_bytes
        else:
            ratio, used, limit = usage.msgs_ratio, usage.messages, usage.max_msgs
        lines.append(
            f"{stream} {name} at {ratio:.0%} of its limit ({used}/{limit}, "
            f"warn above {usage.warn:.0%})"
        )
    return lines


def loop_problems(
    stats: Sequence[LoopStats],
    results: Mapping[str, Mapping[str, Any]],
    *,
    failures_degraded: int,
) -> list[str]:
    """Why the hosted loops make the service DEGRADED; empty when they do not.

    A loop counts when it failed ``failures_degraded`` times in a row, or when its
    latest successful result carries ``warnings`` (a list of strings).
    """
    problems: list[str] = []
    for loop in stats:
        if loop.consecutive_failures >= failures_degraded:
            problems.append(
                f"loop {loop.name} failed {loop.consecutive_failures} times in a "
                f"row: {loop.last_error}"
            )
        warnings = results.get(loop.name, {}).get("warnings") or []
        problems.extend(str(w) for w in warnings)
    return problems
