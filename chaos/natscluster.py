"""A small launcher of 3 clustered nats-server processes (JetStream, routes on loopback).

Used by ``python -m chaos --cluster``: one server is killed with SIGKILL in the middle
of the run and brought back on the same ports and store, while JetStream (R3) keeps
serving from the other two.
"""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import nats
import nats.errors

from shared.embedded import EmbeddedServer, free_port

NAME = "ringmaster-chaos"


class NatsCluster:
    """Three nats-servers routed to each other; ``url`` lists them all."""

    def __init__(self, root: Path, size: int = 3) -> None:
        ports = [free_port() for _ in range(size)]
        routes = [free_port() for _ in range(size)]
        route_urls = ",".join(f"nats://127.0.0.1:{p}" for p in routes)
        self.servers = [
            EmbeddedServer(
                port=ports[i],
                store_dir=root / f"n{i}",
                server_name=f"n{i}",
                log_file=root / "logs" / f"nats-n{i}.log",
                extra_args=(
                    "--cluster_name",
                    NAME,
                    "--cluster",
                    f"nats://127.0.0.1:{routes[i]}",
                    "--routes",
                    route_urls,
                ),
            )
            for i in range(size)
        ]

    @property
    def url(self) -> str:
        """Every server's client URL, comma separated (what clients connect to)."""
        return ",".join(s.url for s in self.servers)

    def start(self) -> None:
        """Start every server."""
        for server in self.servers:
            server.start()

    def stop(self) -> None:
        """Stop every server gracefully."""
        for server in self.servers:
            server.stop()

    def kill(self, index: int) -> None:
        """SIGKILL one server, as a crash would."""
        self.servers[index].kill()

    def revive(self, index: int) -> None:
        """Start a killed server again on its ports and store."""
        self.servers[index].start()


async def wait_jetstream(url: str, timeout: float = 60.0) -> None:
    """Wait until JetStream answers on ``url`` (a cluster elects its meta leader first)."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            nc = await nats.connect(url.split(","), connect_timeout=2, max_reconnect_attempts=0)
        except (OSError, nats.errors.Error) as exc:
            last = exc
        else:
            try:
                await nc.jetstream().account_info()
                return
            except (OSError, nats.errors.Error, TimeoutError) as exc:
                last = exc
            finally:
                await nc.close()
        await anyio.sleep(0.5)
    raise RuntimeError(f"JetStream not ready on {url} within {timeout}s: {last!r}")
