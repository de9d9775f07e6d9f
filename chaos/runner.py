"""One chaos run: start a training cluster, kill -9 things, restart NATS, then judge.

The run owns everything it starts (nats-server or a 3-server cluster, and
``ringmaster up`` with its orchestrator and services) in a work directory it keeps
for the logs. The verdict comes from the durable record only (:mod:`chaos.record`,
:mod:`chaos.invariants`): the event stream and the KV buckets, never the logs.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import anyio
import nats
import nats.errors
from anyio.abc import Process
from nats.aio.client import Client

from chaos.aimed import (
    Aimed,
    failpoint_env,
    feed_ledger,
    hang,
    kill_orchestrator,
    kill_starting,
    kill_up,
    stall_nats,
)
from chaos.checks import Independent, check_independent
from chaos.faults import Kill, KillPlan, kill9, ready_instances
from chaos.fresh import FRESH, FRESH_MIN_GAMES
from chaos.invariants import DurableRecord, Verdict, check_all
from chaos.netfaults import cut_off, cut_server, plan_hosts, start_partitioned
from chaos.partition import stop_agent
from chaos.record import cluster_status
from chaos.report import print_summary, print_table, replay_flags
from chaos.settle import settle
from chaos.setup import instance_counts, spawn_up, stop_up, write_cluster_file
from shared.codec import encode
from shared.contracts import ClusterStatus, ControlCommand
from shared.embedded import EmbeddedServer, free_port
from shared.subjects import Subjects
from shared.testing.natscluster import NatsCluster, wait_jetstream

#: Generous bounds that catch a hang; they measure nothing.
READY_S = 120.0


@dataclass(frozen=True)
class Options:
    """What ``python -m chaos`` was asked to do."""

    kills: int = 100
    seed: int = 0
    interval_s: float = 6.0
    cluster: bool = False
    workdir: Path | None = None
    #: Arm every failpoint once (``*=crash(once)``) for the whole cluster.
    failpoints: bool = False
    #: SIGSTOP hangs among the faults: every this-many-th fault is a hang (0: none).
    hang_every: int = 0
    #: Stall the single nats-server (SIGSTOP) once, three quarters through.
    stall: bool = False
    #: Jobs of the harness's own, checked against its ledger.
    ledger: bool = False
    #: A node agent in its own network namespace, cut off once (root only).
    partition: bool = False
    #: Kill -9 the orchestrator once and ``ringmaster up`` once.
    supervisors: bool = False
    #: Every this-many-th kill, the victim is killed again while it starts (0: never).
    startup_every: int = 0
    #: After the faults, start a fresh game and wait this long for a promotion (0: don't).
    after_s: float = 0.0
    #: Job manager instances sharing the requests and the jobs.
    job_managers: int = 1


class Run:
    """The state of one chaos run."""

    def __init__(self, options: Options, workdir: Path) -> None:
        self.options = options
        self.workdir = workdir
        self.prefix = "chaos"
        self.subjects = Subjects(self.prefix)
        self.started = time.monotonic()
        self.kills: list[Kill] = []
        self.plan = KillPlan(options.seed)
        self.aimed = Aimed()
        #: Filled by :meth:`settle`: what the independent checks judge.
        self.independent: Independent | None = None
        #: The hosts of their own (network namespaces), when asked for and possible.
        self.hosts = plan_hosts(options)
        #: The extra node agent on a host of its own.
        self.agent: Process | None = None
        self.up: Process | None = None
        self.cluster_file: Path | None = None
        self.server_restarts: list[str] = []
        self.client_errors: Counter[str] = Counter()
        self.single: EmbeddedServer | None = None
        self.cluster: NatsCluster | None = None
        places = [h.place for h in self.hosts.servers]
        if options.cluster:
            self.cluster = NatsCluster(workdir / "nats", places=places or None)
            self.url = self.cluster.url
        else:
            place = places[0] if places else None
            self.single = EmbeddedServer(
                host=place.address if place else "127.0.0.1",
                port=free_port(),
                store_dir=workdir / "nats",
                log_file=workdir / "logs" / "nats-server.log",
                netns=place.netns if place else None,
            )
            self.url = self.single.url

    def log(self, text: str) -> None:
        """One progress line, stamped with seconds since the start."""
        print(f"[{time.monotonic() - self.started:7.1f}s] {text}", flush=True)

    async def on_error(self, exc: Exception) -> None:
        """The runner's own connection errors (expected while NATS restarts): counted."""
        self.client_errors[type(exc).__name__] += 1

    # -- NATS ------------------------------------------------------------------------
    def start_nats(self) -> None:
        """Start the server(s); from the main thread (children die with their thread).

        The hosts of their own are made first: the servers run in them.
        """
        if self.hosts.network is not None:
            self.hosts.network.create()
        if self.cluster is not None:
            self.cluster.start()
        else:
            assert self.single is not None
            self.single.start()

    def stop_nats(self) -> None:
        """Stop the server(s)."""
        if self.cluster is not None:
            self.cluster.stop()
        elif self.single is not None:
            self.single.stop()

    async def restart_nats(self) -> None:
        """The mid-run fault: one server down and back (killed, in a cluster)."""
        if self.cluster is not None:
            index = KillPlan(self.options.seed).rng.randrange(len(self.cluster.servers))
            self.log(f"nats: kill -9 server nats-{index + 1} of 3")
            self.cluster.kill(index)
            await anyio.sleep(5.0)
            self.cluster.revive(index)
            self.server_restarts.append(f"nats-{index + 1} killed and revived")
        else:
            assert self.single is not None
            self.log("nats: restarting the server")
            self.single.stop()
            await anyio.sleep(2.0)
            self.single.start()
            self.server_restarts.append("single server restarted")
        await wait_jetstream(self.url)
        self.log("nats: back")

    # -- the cluster -----------------------------------------------------------------
    async def spawn(self) -> None:
        """Start ``ringmaster up`` for the run (again, after it was killed)."""
        assert self.cluster_file is not None
        armed = failpoint_env(self.workdir / "failpoints") if self.options.failpoints else {}
        replicas = 3 if self.options.cluster else 1
        self.up = await spawn_up(self.workdir, self.cluster_file, self.url, replicas, armed)

    async def status(self, nc: Client) -> ClusterStatus | None:
        """The orchestrator's status, or None while it does not answer."""
        try:
            return await cluster_status(nc, self.subjects)
        except (nats.errors.Error, TimeoutError):
            return None

    async def wait_ready(self, nc: Client, bound: float = READY_S) -> ClusterStatus | None:
        """Wait until every supervised instance is RUNNING and ALIVE; None on timeout."""
        expected = sum(instance_counts(self.options.job_managers).values())
        with anyio.move_on_after(bound):
            while True:
                status = await self.status(nc)
                if status is not None and _all_running(status, expected):
                    return status
                await anyio.sleep(0.5)
        return None

    async def control(self, nc: Client, service: str, command: str) -> None:
        """Send a control command to every instance of ``service``."""
        cmd = ControlCommand(command=command, reason="chaos run")  # type: ignore[arg-type]
        with contextlib.suppress(nats.errors.Error, TimeoutError):
            await nc.request(self.subjects.ctl_all(service), encode(cmd), timeout=3.0)

    async def inject(self, nc: Client) -> None:
        """The kills, one every ``interval_s`` (jittered), NATS restarted halfway."""
        plan, opts = self.plan, self.options
        restart_at = max(1, opts.kills // 2)
        stall_at = max(1, opts.kills * 3 // 4)
        cut_at, server_cut_at = max(1, opts.kills // 3), max(1, opts.kills * 2 // 5)
        orchestrator_at, up_at = max(1, opts.kills * 3 // 5), max(1, opts.kills * 17 // 20)
        number = faults = 0
        while number < opts.kills:
            await anyio.sleep(plan.jitter(opts.interval_s))
            if number + 1 == restart_at and not self.server_restarts:
                await self.restart_nats()
            if opts.stall and number + 1 == stall_at and not self.aimed.stalls:
                await stall_nats(self, self.single.pid if self.single else None, self.aimed)
            agent = self.hosts.agent
            if agent is not None and number + 1 == cut_at and not agent.cuts:
                await cut_off(self, agent)
            if number + 1 == server_cut_at and not any(h.cuts for h in self.hosts.servers):
                await cut_server(self)
            if opts.supervisors and number + 1 == orchestrator_at and not self.aimed.supervisors:
                await kill_orchestrator(self, nc, self.aimed)
            if opts.supervisors and number + 1 == up_at and len(self.aimed.supervisors) == 1:
                await kill_up(self, nc, self.aimed)
            faults += 1
            if opts.hang_every and faults % opts.hang_every == 0:
                await hang(self, nc, self.aimed)
                continue
            status = await self.status(nc)
            now = time.monotonic()
            victim = plan.choose(status, now) if status is not None else None
            if victim is None or victim.pid is None:
                continue  # nobody may be killed right now: try again after the next pause
            number += 1
            kill9(victim.pid)
            self.kills.append(
                Kill(number, now - self.started, victim.service, victim.instance, victim.pid)
            )
            self.log(f"kill {number}/{self.options.kills}: {victim.instance} (pid {victim.pid})")
            if opts.startup_every and number % opts.startup_every == 0:
                await kill_starting(self, nc, self.aimed, victim.instance, victim.pid)

    async def settle(self, nc: Client) -> DurableRecord:
        """Stop making jobs, let every job end, read the record, resume, check health."""
        return await settle(self, nc)


def _all_running(status: ClusterStatus, expected: int) -> bool:
    ready = ready_instances(status)
    children = [c for c in status.children if c.running and (c.service, c.instance, c.pid) in ready]
    return len(children) == expected


async def execute(run: Run) -> DurableRecord:
    """The whole run against started NATS servers; the durable record at its end."""
    fresh = FRESH if run.options.after_s else None
    run.cluster_file = write_cluster_file(
        run.workdir, run.prefix, fresh, FRESH_MIN_GAMES, run.options.job_managers
    )
    await run.spawn()
    try:
        nc = await nats.connect(
            run.url.split(","), max_reconnect_attempts=-1, error_cb=run.on_error
        )
        try:
            if await run.wait_ready(nc) is None:
                run.log("the cluster did not come up; see the logs")
            else:
                await start_partitioned(run)
                run.log("cluster RUNNING; injecting faults")
                async with anyio.create_task_group() as tg:
                    if run.options.ledger:
                        tg.start_soon(feed_ledger, run, nc, run.aimed)
                    await run.inject(nc)
                    tg.cancel_scope.cancel()
            return await run.settle(nc)
        finally:
            await nc.close()
    finally:
        await stop_agent(run.agent)
        if run.up is not None:
            await stop_up(run.up)


def chaos_run(options: Options) -> tuple[Run, DurableRecord, list[Verdict]]:
    """Run the chaos run of ``options`` and judge it; prints progress and the table."""
    workdir = options.workdir or Path(os.environ.get("TMPDIR", "/tmp")) / f"chaos-{os.getpid()}"
    (workdir / "logs").mkdir(parents=True, exist_ok=True)
    run = Run(options, workdir)
    mode = "3-server cluster" if options.cluster else "single server"
    print(
        f"chaos: seed {options.seed} (replay: python -m chaos --seed {options.seed} "
        f"--kills {options.kills}{replay_flags(options)}); {mode}; work directory {workdir}",
        flush=True,
    )
    try:
        run.start_nats()
        if run.cluster is not None:
            anyio.run(wait_jetstream, run.url)
        record = anyio.run(execute, run)
    finally:
        # Also after a failure or Ctrl-C: no server, agent, namespace or bridge outlives
        # the run (the agent is stopped in order by ``execute``; this is the fallback).
        if run.agent is not None and run.agent.returncode is None:
            run.agent.kill()
        run.stop_nats()
        run.hosts.remove()
    verdicts = check_all(record)
    if run.independent is not None:
        verdicts += check_independent(run.independent, record.events, record.jobs)
    else:
        verdicts.append(Verdict("the run reached its reading", False, 0, ["it did not"]))
    print_summary(run, record)
    print_table(verdicts)
    return run, record, verdicts


def main(options: Options) -> int:
    """Run the chaos run of ``options``; 0 when every invariant held."""
    _, _, verdicts = chaos_run(options)
    return 0 if all(v.held for v in verdicts) else 1
