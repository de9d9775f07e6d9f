"""A subscriber in its own process that counts what it receives (the raw pub/sub limit).

``python -m bench._sub URL SUBJECT READY_FILE RESULT_FILE``: writes READY_FILE once
subscribed, then RESULT_FILE ({count, first, last, cpu}: wall-clock times of the
first and last message, CPU seconds used since subscribing) once no message came for
``--idle`` seconds after the first.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

import nats
from nats.aio.msg import Msg

from bench.harness import write_json


async def main(args: argparse.Namespace) -> None:
    """Subscribe, count, report."""
    nc = await nats.connect(args.url, connect_timeout=5)
    state = {"count": 0, "first": 0.0, "last": 0.0}

    async def on_msg(_msg: Msg) -> None:
        now = time.time()
        if not state["count"]:
            state["first"] = now
        state["count"] += 1
        state["last"] = now

    # Limits high enough that this subscriber never drops as a slow consumer: the
    # figure is what the bus delivers, not what a default buffer keeps.
    await nc.subscribe(
        args.subject, cb=on_msg, pending_msgs_limit=5_000_000, pending_bytes_limit=2**31
    )
    await nc.flush()
    write_json(Path(args.ready), {"ready": time.time()})
    cpu_start = time.process_time()
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        if state["count"] and time.time() - state["last"] > args.idle:
            break
    # The idle wait after the last message costs next to nothing: a 0.1 s sleep loop.
    write_json(Path(args.result), {**state, "cpu": time.process_time() - cpu_start})
    await nc.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("subject")
    parser.add_argument("ready")
    parser.add_argument("result")
    parser.add_argument("--idle", type=float, default=1.0)
    parser.add_argument("--timeout", type=float, default=60.0)
    asyncio.run(main(parser.parse_args()))
