"""Three clustered nats-servers from the shipped ``deploy/nats/cluster.conf``: the one
launcher of a NATS cluster, for the integration tests and the chaos suite.

Each server runs ``cluster.conf`` (with its ``auth.conf``) with routes to the other two
and JetStream on each, reusing :class:`~shared.embedded.EmbeddedServer`. By default all
three listen on loopback. Given :class:`Place` s, each runs on an address of its own,
optionally inside a network namespace (``ip netns``), as on a host of its own: the
chaos suite cuts such a host off by taking its link down.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

import anyio
import nats
import nats.errors

from shared.embedded import EmbeddedServer, free_port
from shared.errors import EmbeddedServerError
from shared.testing.cluster import MONITOR, STORE_DIR, STORE_DIR_FLAG, write_config


@dataclass(frozen=True)
class Place:
    """Where one server runs: the address it listens on, and its namespace if any."""

    address: str = "127.0.0.1"
    netns: str | None = None


class NatsCluster:
    """Three clustered nats-servers (routes, JetStream) from ``deploy/nats/cluster.conf``."""

    size = 3

    def __init__(
        self, base: Path, auth_conf: str = "", places: Sequence[Place] | None = None
    ) -> None:
        self.base = base
        self.auth_conf = auth_conf
        self.places = list(places) if places is not None else [Place()] * self.size
        if len(self.places) != self.size:
            raise ValueError(f"a cluster of {self.size} needs {self.size} places")
        # Ports picked on loopback here: a namespace of its own has every port free.
        self.route_ports = [free_port() for _ in range(self.size)]
        self.http_ports = [free_port() for _ in range(self.size)]
        self.servers = [self._server(i) for i in range(self.size)]

    def _server(self, i: int) -> EmbeddedServer:
        name = f"nats-{i + 1}"
        place = self.places[i]
        replacements = {
            r"^server_name: \$NATS_SERVER_NAME$": f"server_name: {name}",
            STORE_DIR: STORE_DIR_FLAG,
            MONITOR: f'http: "{place.address}:{self.http_ports[i]}"',
            r"^  listen: 0\.0\.0\.0:6222$": f"  listen: {place.address}:{self.route_ports[i]}",
            r"^  port: 7422$": f"  port: {free_port()}",
        }
        for j, port in enumerate(self.route_ports):
            replacements[rf"nats://nats-{j + 1}:6222"] = f"nats://{self.places[j].address}:{port}"
        conf = write_config("cluster.conf", self.base / name, self.auth_conf, replacements)
        return EmbeddedServer(
            host=place.address,
            port=free_port(),
            store_dir=self.base / name / "jetstream",
            server_name=name,
            extra_args=["-c", str(conf)],
            log_file=self.base / name / "nats-server.log",
            netns=place.netns,
        )

    @property
    def urls(self) -> list[str]:
        """Each server's client URL, in order."""
        return [s.url for s in self.servers]

    @property
    def url(self) -> str:
        """Every server, comma-separated: what a client is given to fail over."""
        return ",".join(self.urls)

    def start(self) -> None:
        """Start all three; wait until each is routed and JetStream has a meta leader."""
        for server in self.servers:
            server.start()
        for server in self.servers:
            self.wait_routed(server)
        for i in range(self.size):
            self.wait_healthy(i)

    def kill(self, i: int) -> None:
        """SIGKILL server ``i``, as a crash would."""
        self.servers[i].kill()

    def revive(self, i: int) -> None:
        """Start server ``i`` again on its ports and store; wait until it is current."""
        self.servers[i].start()
        self.wait_healthy(i)

    def wait_healthy(self, i: int, timeout: float = 30.0) -> None:
        """Block until server ``i``'s ``/healthz`` says its JetStream is current."""
        url = f"http://{self.places[i].address}:{self.http_ports[i]}/healthz"
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=2) as reply:
                    if reply.status == 200:
                        return
            except (OSError, urllib.error.URLError) as exc:  # 503 until JetStream is ready
                last = str(exc)
            time.sleep(0.1)
        raise EmbeddedServerError(f"nats-{i + 1} not healthy within {timeout:g}s: {last}")

    def wait_routed(self, server: EmbeddedServer, timeout: float = 30.0) -> None:
        """Block until ``server``'s log shows routes to every other live server."""
        want = sum(1 for s in self.servers if s is not server and s.running)
        deadline = time.monotonic() + timeout
        assert server.log_file is not None
        while time.monotonic() < deadline:
            log = server.log_file.read_text(encoding="utf-8", errors="replace")
            if log.count("Route connection created") >= want:
                return
            time.sleep(0.1)
        raise EmbeddedServerError(f"{server.server_name} did not route to {want} servers")

    def violations(self) -> list[str]:
        """Every permission violation any server logged."""
        found: list[str] = []
        for server in self.servers:
            if server.log_file is not None and server.log_file.exists():
                text = server.log_file.read_text(encoding="utf-8", errors="replace")
                found += [line for line in text.splitlines() if "Violation" in line]
        return found

    def stop(self) -> None:
        """Stop every server that runs."""
        for server in self.servers:
            server.stop()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


async def wait_jetstream(url: str, timeout: float = 60.0) -> None:
    """Wait until JetStream answers a client of ``url`` (comma-separated servers)."""
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
