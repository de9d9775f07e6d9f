"""The raw limit of a service's memory: a bare process with the same libraries, connected.

``python -m bench._bare URL READY_FILE``: imports nats, msgspec and anyio, connects
to NATS, subscribes to one subject, writes READY_FILE and idles until killed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
import msgspec
import nats


async def main(url: str, ready: Path) -> None:
    """Connect, subscribe, say ready, idle."""
    nc = await nats.connect(url, connect_timeout=5)
    await nc.subscribe("bench.bare.idle")
    await nc.flush()
    await anyio.Path(ready).write_bytes(msgspec.json.encode({"ready": True}))
    await anyio.sleep_forever()


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], Path(sys.argv[2]))
