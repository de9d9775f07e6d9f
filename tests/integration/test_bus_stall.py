"""A server that stops answering without closing the connection is noticed by pings.

With nats-py's defaults (a ping every 120 s, 2 unanswered allowed) a hung server or a
half-open connection went unnoticed for about 4 minutes; the bus now pings every
``PING_INTERVAL_S`` and gives the connection up after ``MAX_OUTSTANDING_PINGS``.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from shared.bus import MAX_OUTSTANDING_PINGS, PING_INTERVAL_S, BusStats, connect
from shared.embedded import EmbeddedServer, free_port
from shared.testing.helpers import eventually

pytestmark = pytest.mark.anyio


async def test_a_hung_server_is_noticed_and_the_client_reconnects_when_it_is_back(
    tmp_path: Path,
) -> None:
    server = EmbeddedServer(port=free_port(), store_dir=tmp_path / "nats")
    server.start()
    try:
        stats = BusStats()
        nc = await connect(server.url, name="stall-test", stats=stats)
        try:
            assert server.pid is not None
            os.kill(server.pid, signal.SIGSTOP)
            try:
                # Noticed after the unanswered pings (plus one interval of slack).
                bound = PING_INTERVAL_S * (MAX_OUTSTANDING_PINGS + 2)
                await eventually(lambda: stats.disconnects == 1, timeout=bound, what="noticed")
            finally:
                os.kill(server.pid, signal.SIGCONT)
            await eventually(lambda: nc.is_connected and stats.reconnects == 1, what="back")
            await nc.flush(timeout=5)
        finally:
            await nc.close()
    finally:
        server.stop()
