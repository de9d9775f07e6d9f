"""A trivial responder in its own process: the raw request/reply limit.

``python -m bench._respond URL SUBJECT READY_FILE`` answers every request on SUBJECT
with ``{}`` and writes READY_FILE once subscribed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
import nats
from nats.aio.msg import Msg

from bench.harness import write_json


async def respond(url: str, subject: str, ready: Path) -> None:
    """Answer every request on ``subject`` with ``{}`` until killed."""
    nc = await nats.connect(url, connect_timeout=5)

    async def answer(msg: Msg) -> None:
        await msg.respond(b"{}")

    await nc.subscribe(subject, cb=answer)
    await nc.flush()
    write_json(ready, {"ready": True})
    await anyio.sleep_forever()


if __name__ == "__main__":
    anyio.run(respond, sys.argv[1], sys.argv[2], Path(sys.argv[3]))
