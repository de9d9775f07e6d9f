"""The partition faults of a run: its hosts, and cutting one off for a while.

With ``--partition`` (root only) the run gets a :class:`~chaos.partition.Network`:
a host for each NATS server (3 with ``--cluster``, else the one) and one for an extra
node agent. A third of the way in the agent's host is cut off for ``PARTITION_S``;
with ``--cluster`` one server's host (seeded choice) is cut off too, later: the
clients connected to it hear nothing (no RST), and what was led there moves to the
other two. A lone server's host is never cut: that would be the NATS stall again.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio

from chaos.partition import Host, Network, start_agent, unavailable

if TYPE_CHECKING:
    from chaos.runner import Options, Run

#: A partition outlasts node loss and a lease: the host's attempts go to others.
PARTITION_S = 10.0
AGENT = "partitioned-1"


@dataclass
class Hosts:
    """The run's network (None: not asked for, or not possible, ``note`` says why)."""

    network: Network | None = None
    servers: list[Host] = field(default_factory=list)
    agent: Host | None = None
    notes: list[str] = field(default_factory=list)

    def remove(self) -> None:
        """Remove whatever of the network exists (also after a failure or Ctrl-C)."""
        if self.network is not None and self.network.created:
            self.network.remove()


def plan_hosts(options: Options) -> Hosts:
    """The hosts a run of ``options`` will make (nothing is created yet)."""
    if not options.partition:
        return Hosts()
    reason = unavailable()
    if reason is not None:
        return Hosts(notes=[f"skipped: {reason}"])
    network = Network(options.seed)
    count = 3 if options.cluster else 1
    servers = [network.host(f"nats-{i + 1}") for i in range(count)]
    return Hosts(network, servers, network.host(AGENT))


async def start_partitioned(run: Run) -> None:
    """Start the extra node agent on its host (when the run has one)."""
    host = run.hosts.agent
    if host is None:
        if run.hosts.notes:
            run.log(f"partition: {run.hosts.notes[0]}")
        return
    run.agent = await start_agent(host, run.workdir, run.prefix, run.url, beacon=0.5)
    run.log(f"partition: node agent {host.name} started in namespace {host.ns}")


async def cut_off(run: Run, host: Host) -> None:
    """Cut ``host`` off for ``PARTITION_S``, then heal its link."""
    run.log(f"partition: {host.name} ({host.ns}) cut off (link down) for {PARTITION_S:.0f}s")
    host.cut()
    try:
        await anyio.sleep(PARTITION_S)
    finally:
        host.heal()
    run.hosts.notes.append(f"{host.name} cut off for {PARTITION_S:.0f}s")
    run.log(f"partition: {host.name} healed")


async def cut_server(run: Run) -> None:
    """Cut one NATS server's host off (a seeded choice), heal, wait until it is current."""
    if run.cluster is None or not run.hosts.servers:
        return
    index = random.Random(run.options.seed + 1).randrange(len(run.hosts.servers))
    await cut_off(run, run.hosts.servers[index])
    await anyio.to_thread.run_sync(run.cluster.wait_healthy, index)
    run.log(f"partition: {run.hosts.servers[index].name} current again")
