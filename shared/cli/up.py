"""``ringmaster up``: the cluster of a cluster file, until Ctrl-C.

Starts the embedded nats-server (unless ``NATS_URL`` or ``--nats-url`` names one),
then the orchestrator, the one process ``up`` supervises: the orchestrator starts
and supervises every service of the cluster file. Ctrl-C or SIGTERM stops it in
order (SIGTERM to the orchestrator, which stops its children; SIGKILL to its
process group past ``--stop-timeout``), then the embedded server.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import anyio
from anyio.abc import TaskStatus
from rich.console import Console

from shared.cli.client import CliError, NoAnswer, connected, positive_float, request
from shared.cli.live import StatusView, follow_status
from shared.cli.process import Orchestrator
from shared.cli.service import known_services
from shared.cluster import ClusterFile, load_cluster, service_env
from shared.contracts import ClusterStatus, Empty
from shared.embedded import EmbeddedServer
from shared.errors import ConfigError, EmbeddedServerError
from shared.subjects import Subjects

EPILOG = "With NATS_URL set (or --nats-url), no embedded nats-server is started."

INSTANCE = "orchestrator-1"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--cluster``, ``--no-live``, ``--stop-timeout`` and the NATS options."""
    parser.add_argument(
        "--cluster",
        metavar="FILE",
        type=Path,
        default=Path("ringmaster.toml"),
        help="the cluster file (default: ./ringmaster.toml)",
    )
    parser.add_argument("--no-live", action="store_true", help="plain lines, no live view")
    parser.add_argument(
        "--stop-timeout",
        metavar="S",
        type=positive_float,
        default=45.0,
        help="seconds the orchestrator gets to stop the cluster before SIGKILL (default: 45)",
    )
    parser.add_argument(
        "--nats-url",
        metavar="URL",
        default=None,
        help="use this NATS server instead of starting one (also: $NATS_URL)",
    )
    parser.add_argument(
        "--connect-timeout",
        metavar="S",
        type=positive_float,
        default=3.0,
        help="seconds to reach NATS before giving up (default: 3)",
    )


@dataclass(frozen=True)
class Plan:
    """Everything ``up`` needs, resolved from the arguments and the cluster file."""

    cluster_file: Path
    cluster: ClusterFile
    data_dir: Path
    subjects: Subjects

    @property
    def log_dir(self) -> Path:
        """Where the orchestrator, its children and the embedded server log."""
        return self.data_dir / "logs"

    @property
    def http_url(self) -> str:
        """The orchestrator's HTTP status page."""
        return self._http("/status")

    @property
    def dashboard_url(self) -> str:
        """The orchestrator's live dashboard."""
        return self._http("/")

    def _http(self, path: str) -> str:
        settings = self.cluster.cluster
        if settings.http_port < 0:
            return "(no HTTP server: cluster.http_port = -1)"
        if settings.http_port == 0:
            return f"(HTTP on a free port of {settings.http_host}; see the orchestrator log)"
        return f"http://{settings.http_host}:{settings.http_port}{path}"


def load_plan(args: argparse.Namespace) -> Plan:
    """Read and check the cluster file; CliError (exit 2) names what is wrong."""
    path = Path(args.cluster).resolve()
    try:
        cluster = load_cluster(path)
    except ConfigError as exc:
        raise CliError(str(exc), 2) from None
    known = known_services()
    for name, entry in cluster.services.items():
        if entry.enabled and name not in known:
            raise CliError(
                f"cluster file {path}: services.{name}: no such service; known: "
                f"{', '.join(known) or 'none'}",
                2,
            )
    # A relative data_dir is relative to the cluster file, wherever `up` is run from.
    data_dir = (path.parent / cluster.cluster.data_dir).resolve()
    return Plan(path, cluster, data_dir, Subjects(cluster.cluster.prefix))


def orchestrator_env(plan: Plan, nats_url: str) -> dict[str, str]:
    """The orchestrator's config, as ``RINGMASTER_ORCHESTRATOR_*`` variables."""
    settings = plan.cluster.cluster
    return service_env(
        "orchestrator",
        {
            "nats_url": nats_url,
            "prefix": settings.prefix,
            "cluster_file": str(plan.cluster_file),
            "http_host": settings.http_host,
            "http_port": settings.http_port,
            "beacon_interval": settings.beacon_interval,
            "replicas": settings.replicas,
            "instance": INSTANCE,
            "data_dir": str(plan.data_dir),
        },
    )


def run(args: argparse.Namespace) -> int:
    """Run the cluster until Ctrl-C or SIGTERM; 0 after an orderly stop."""
    plan = load_plan(args)
    url = args.nats_url or os.environ.get("NATS_URL")
    server: EmbeddedServer | None = None
    if not url:
        settings = plan.cluster.cluster
        server = EmbeddedServer(
            host=settings.nats_host,
            port=settings.nats_port,
            store_dir=plan.data_dir / "nats",
            log_file=plan.log_dir / "nats-server.log",
        )
        try:
            server.start()
        except EmbeddedServerError as exc:
            raise CliError(str(exc), 1) from None
        url = server.url
    args.nats_url = url
    live = sys.stdout.isatty() and not args.no_live
    try:
        return int(anyio.run(_up, args, plan, live))
    finally:
        if server is not None:
            server.stop()


async def _up(args: argparse.Namespace, plan: Plan, live: bool) -> int:
    console = Console()
    async with connected(args, "ringmaster-up") as nc:
        try:
            found = await request(
                nc, plan.subjects.api("orchestrator", "status"), Empty(), ClusterStatus, timeout=1.0
            )
        except NoAnswer:
            pass  # the expected case: nobody runs this cluster yet
        else:
            raise CliError(
                f"an orchestrator ({found.orchestrator}) already runs prefix "
                f"{plan.subjects.prefix!r} on {args.nats_url}; stop it first"
            )
        env = {**os.environ, **orchestrator_env(plan, args.nats_url)}
        orch = Orchestrator(env, plan.log_dir / f"{INSTANCE}.log", cwd=plan.cluster_file.parent)

        def header() -> str:
            return (
                f"ringmaster up: prefix {plan.subjects.prefix}, NATS {args.nats_url}, "
                f"{plan.http_url}, orchestrator pid {orch.pid} (restarts {orch.restarts})"
            )

        stop = anyio.Event()
        force = anyio.Event()
        async with anyio.create_task_group() as tg:
            # Signals are ours before the orchestrator exists, so no Ctrl-C can orphan it.
            await tg.start(_signals, stop, force)
            try:
                orch.start()
            except OSError as exc:
                raise CliError(f"cannot start the orchestrator: {exc}") from None
            print(
                f"NATS:      {args.nats_url}\ndashboard: {plan.dashboard_url}\n"
                f"status:    {plan.http_url}\nlogs:      {plan.log_dir}",
                flush=True,
            )
            with StatusView(console, live=live, header=header) as view:
                async with anyio.create_task_group() as work:
                    work.start_soon(orch.keep_alive, view.note, stop)
                    work.start_soon(follow_status, nc, plan.subjects, view)
                    await stop.wait()
                    work.cancel_scope.cancel()
                if not orch.fatal:
                    view.note("stopping the cluster (Ctrl-C again to kill it)")
                await orch.stop(args.stop_timeout, force, view.note)
            tg.cancel_scope.cancel()
    if orch.fatal:
        raise CliError(orch.fatal, 1)
    print("cluster stopped", flush=True)
    return 0


async def _signals(stop: anyio.Event, force: anyio.Event, *, task_status: TaskStatus[None]) -> None:
    """First SIGINT/SIGTERM: stop in order; the second: kill what is left."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async for _ in signals:
            if stop.is_set():
                force.set()
            stop.set()
