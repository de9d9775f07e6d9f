"""nats-servers started from the shipped ``deploy/nats`` configs, on loopback ports.

The tests run the very files a deployment uses: each config is copied next to its
``auth.conf`` with only its ports, host names and store directory replaced (every
replacement must match exactly once, so a config that drifts fails loudly here).
The three servers of ``cluster.conf`` are started by
:class:`shared.testing.natscluster.NatsCluster`.
"""

from __future__ import annotations

import re
from pathlib import Path

from shared.embedded import EmbeddedServer, free_port

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
