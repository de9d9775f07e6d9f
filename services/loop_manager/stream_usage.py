"""The ``event_stream_usage`` loop: how full ``P_EVENTS`` is against its limits."""

from __future__ import annotations

from typing import Any

import msgspec

from services.loop_manager.policy import judge_stream_usage, usage_warnings
from services.loop_manager.registry import LoopContext, LoopDef, register


@register("event_stream_usage")
def event_stream_usage(ctx: LoopContext) -> LoopDef:
    """Read the event stream's state and config; warn when it nears a limit.

    With discard-old retention a full stream silently loses its oldest events, which
    consumers that fell behind would never see: this makes that visible in advance.
    """
    stream = ctx.subjects.events_stream

    async def run() -> dict[str, Any]:
        info = await ctx.js.stream_info(stream)
        usage = judge_stream_usage(
            messages=info.state.messages,
            bytes_=info.state.bytes,
            max_msgs=info.config.max_msgs,
            max_bytes=info.config.max_bytes,
            max_age_s=info.config.max_age,
            warn=ctx.config.stream_usage_warn,
        )
        result: dict[str, Any] = {"stream": stream, **msgspec.to_builtins(usage)}
        result["warnings"] = usage_warnings(stream, usage)
        return result

    return LoopDef(
        run,
        interval=30.0,
        timeout=10.0,
        description=f"usage of {stream} against its byte and message limits",
    )
