"""nats-servers started from the shipped ``deploy/nats`` configs, on loopback ports.

The tests run the very files a deployment uses: each config is copied next to its
``auth.conf`` with only its ports, host names and store directory replaced (every
replacement must match exactly once, so a config that drifts fails loudly here).
:class:`NatsCluster` starts three servers of ``cluster.conf`` with routes between
them and JetStream on each, reusing :class:`~shared.embedded.EmbeddedServer`.
"""

from __future__ import annotations

import re
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Self

from shared.embedded import EmbeddedServer, free_port
from shared.errors import EmbeddedServerError

DEPLOY_NATS = Path(__file__).resolve().parents[2] / "deploy" / "nats"

# EmbeddedServer gives the store directory with -sd, which nats-server refuses to
# combine with a store_dir in the file.
STORE_DIR = r'^  store_dir: "/data/jetstream"$'
STORE_DIR_FLAG = "  # store_dir: given with -sd"
MONITOR = r'^http: "127\.0\.0\.1:8222"$'
#: Where the shipped configs expect the files of `ringmaster nats-config --tls`.
TLS_DIR = "/etc/nats/tls/"
_TLS_BLOCK = re.compile(r"^( *)tls \{\n(?:.*\n)*?\1\}\n", re.MULTILINE)


def with_tls(text: str, tls_dir: Path | None) -> str:
    """``text`` with its TLS files under ``tls_dir``, or with every ``tls`` block removed.

    Most tests run plain TCP; the TLS tests give a directory ``make_tls`` filled.
    """
    if tls_dir is not None:
        return text.replace(TLS_DIR, f"{tls_dir}/")
    text, count = _TLS_BLOCK.subn("", text)
    if not count:
        raise ValueError("the config has no tls block to remove")
    return text


def adapt_config(text: str, replacements: dict[str, str]) -> str:
    """``text`` with each regex of ``replacements`` replaced exactly once."""
    for pattern, new in replacements.items():
        text, count = re.subn(pattern, new, text, flags=re.MULTILINE)
        if count != 1:
            raise ValueError(f"config pattern {pattern!r} matched {count} times, not once")
    return text


def write_config(
    template: str,
    dest_dir: Path,
    auth_conf: str,
    replacements: dict[str, str],
    tls_dir: Path | None = None,
) -> Path:
    """Copy ``deploy/nats/<template>`` into ``dest_dir`` with its ``auth.conf``; its path."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    (dest_dir / "auth.conf").write_text(auth_conf, encoding="utf-8")
    text = with_tls((DEPLOY_NATS / template).read_text(encoding="utf-8"), tls_dir)
    text = adapt_config(text, replacements)
    path = dest_dir / template
    path.write_text(text, encoding="utf-8")
    return path


def single_server(base: Path, auth_conf: str, tls_dir: Path | None = None) -> EmbeddedServer:
    """A started server of ``server.conf`` on free ports, with ``auth_conf`` included."""
    conf = write_config(
        "server.conf",
        base,
        auth_conf,
        {
            STORE_DIR: STORE_DIR_FLAG,
            MONITOR: f'http: "127.0.0.1:{free_port()}"',
            r"^  port: 7422$": f"  port: {free_port()}",
        },
        tls_dir,
    )
    server = EmbeddedServer(
        port=free_port(),
        store_dir=base / "jetstream",
        server_name="ringmaster-1",
        extra_args=["-c", str(conf)],
        log_file=base / "nats-server.log",
    )
    server.start()
    return server


class NatsCluster:
    """Three clustered nats-servers (routes, JetStream) from ``deploy/nats/cluster.conf``."""

    size = 3

    def __init__(self, base: Path, auth_conf: str = "") -> None:
        self.base = base
        self.auth_conf = auth_conf
        self.route_ports = [free_port() for _ in range(self.size)]
        self.http_ports = [free_port() for _ in range(self.size)]
        self.servers: list[EmbeddedServer] = []
        for i in range(self.size):
            self.servers.append(self._server(i))

    def _server(self, i: int) -> EmbeddedServer:
        name = f"nats-{i + 1}"
        replacements = {
            r"^server_name: \$NATS_SERVER_NAME$": f"server_name: {name}",
            STORE_DIR: STORE_DIR_FLAG,
            MONITOR: f'http: "127.0.0.1:{self.http_ports[i]}"',
            r"^  listen: 0\.0\.0\.0:6222$": f"  listen: 127.0.0.1:{self.route_ports[i]}",
            r"^  port: 7422$": f"  port: {free_port()}",
        }
        for j, port in enumerate(self.route_ports):
            replacements[rf"nats://nats-{j + 1}:6222"] = f"nats://127.0.0.1:{port}"
        conf = write_config("cluster.conf", self.base / name, self.auth_conf, replacements)
        return EmbeddedServer(
            port=free_port(),
            store_dir=self.base / name / "jetstream",
            server_name=name,
            extra_args=["-c", str(conf)],
            log_file=self.base / name / "nats-server.log",
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

    def wait_healthy(self, i: int, timeout: float = 30.0) -> None:
        """Block until server ``i``'s ``/healthz`` says its JetStream is current."""
        url = f"http://127.0.0.1:{self.http_ports[i]}/healthz"
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


def generate_auth(prefix: str, secrets_dir: Path, cost: int = 4, nodes: str = "") -> str:
    """The auth.conf ``ringmaster nats-config`` writes for ``prefix`` (user files too).

    The low bcrypt cost keeps the many connects of a test run cheap; the rules are
    the same at any cost.
    """
    from shared.natsconf import load_or_make_users, render
    from shared.node_permissions import parse_nodes
    from shared.subjects import Subjects

    subjects = Subjects(prefix)
    specs = tuple(parse_nodes(nodes))
    users = load_or_make_users(subjects, secrets_dir, specs)
    return render(subjects, users, cost, specs).config


class AuthServer:
    """A started server of ``server.conf`` with the generated users of ``prefix``."""

    def __init__(self, base: Path, prefix: str, nodes: str = "", *, tls: bool = False) -> None:
        self.secrets = base / "secrets"
        auth = generate_auth(prefix, self.secrets, nodes=nodes)
        #: The files of ``ringmaster nats-config --tls`` when the server runs TLS.
        self.tls_dir: Path | None = None
        if tls:
            from shared.node_permissions import parse_nodes
            from shared.tlsgen import make_tls

            self.tls_dir = base / "tls"
            make_tls(self.tls_dir, [n.node_id for n in parse_nodes(nodes)])
        self.server = single_server(base / "server", auth, self.tls_dir)

    @property
    def url(self) -> str:
        """The server's client URL."""
        return self.server.url

    def user_file(self, kind: str) -> str:
        """Path of one kind's user file (``operator`` for everything)."""
        return str(self.secrets / f"{kind}.user")

    def tls_files(self, who: str = "client") -> dict[str, str]:
        """Config fields of a client's TLS files: ``client`` or ``node-<id>``; {} if plain."""
        if self.tls_dir is None:
            return {}
        d = self.tls_dir
        return {
            "tls_ca_file": str(d / "ca.crt"),
            "tls_cert_file": str(d / f"{who}.crt"),
            "tls_key_file": str(d / f"{who}.key"),
        }

    def stop(self) -> None:
        """Stop the server."""
        self.server.stop()
