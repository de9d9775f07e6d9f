"""Hosts of their own: network namespaces on a bridge, each cut off by its link.

Each host is a network namespace (``ip netns``) joined to a Linux bridge in the root
namespace by a veth pair; the bridge has the address ``<subnet>.1`` (where the
managers, which stay in the root namespace, come from) and host ``i`` has
``<subnet>.<10+i>``. The NATS servers of a run (3 with ``--cluster``, else the one)
and one extra node agent each run in a host; the servers route to each other and every
client reaches them over the bridge. A partition takes the root end of a host's pair
down: its TCP connections go silent without being closed (no RST, no FIN), as when a
switch or a cable fails. tc netem is not available here; a link down is a total
partition, which is the case that matters. Root only: where namespaces cannot be made
the run says why and goes on without them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import Process

from shared.cluster import service_env
from shared.testing.natscluster import Place


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=False)


def _must(*args: str) -> None:
    done = _ip(*args)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def unavailable() -> str | None:
    """Why network namespaces cannot be used here, or None when they can."""
    if os.geteuid() != 0:
        return "not root: network namespaces need CAP_NET_ADMIN"
    if shutil.which("ip") is None:
        return "no ip(8) command (iproute2)"
    name = f"rmprobe{os.getpid()}"  # its own name: two runs may probe at once
    probe = _ip("netns", "add", name)
    if probe.returncode != 0:
        return f"ip netns add failed: {probe.stderr.strip()}"
    _ip("netns", "del", name)
    return None


class Host:
    """One namespace on the run's bridge: a host with one address."""

    def __init__(self, short: str, index: int, subnet: str, name: str) -> None:
        self.name = name
        self.ns = f"rm{short}h{index}"
        self.outside = f"rm{short}r{index}"  # interface names: at most 15 characters
        self.inside = f"rm{short}n{index}"
        self.address = f"{subnet}.{10 + index}"
        self.cuts = 0

    @property
    def place(self) -> Place:
        """Where a server on this host runs."""
        return Place(self.address, self.ns)

    def create(self, bridge: str) -> None:
        """The namespace, its veth pair on ``bridge`` and its address."""
        _must("netns", "add", self.ns)
        _must("link", "add", self.outside, "type", "veth", "peer", "name", self.inside)
        _must("link", "set", self.inside, "netns", self.ns)
        _must("link", "set", self.outside, "master", bridge)
        _must("link", "set", self.outside, "up")
        _must("-n", self.ns, "addr", "add", f"{self.address}/24", "dev", self.inside)
        _must("-n", self.ns, "link", "set", self.inside, "up")
        _must("-n", self.ns, "link", "set", "lo", "up")

    def cut(self) -> None:
        """Partition the host: its link goes down."""
        _must("link", "set", self.outside, "down")
        self.cuts += 1

    def heal(self) -> None:
        """End the partition."""
        _must("link", "set", self.outside, "up")

    def remove(self) -> None:
        """Delete the pair and the namespace (deleting one end deletes both); quiet."""
        _ip("link", "del", self.outside)
        _ip("netns", "del", self.ns)


class Network:
    """The bridge and the hosts of one run; named after ``tag`` (the seed)."""

    def __init__(self, tag: int) -> None:
        self.short = f"{tag % 100000}"
        self.subnet = f"10.231.{tag % 250}"
        self.bridge = f"rm{self.short}br"
        self.gateway = f"{self.subnet}.1"
        self.hosts: list[Host] = []
        self.created = False

    def host(self, name: str) -> Host:
        """A new host of the network (made by :meth:`create`)."""
        host = Host(self.short, len(self.hosts) + 1, self.subnet, name)
        self.hosts.append(host)
        return host

    def create(self) -> None:
        """The bridge and every host; what a killed earlier run left is removed first."""
        self.remove()
        self.created = True
        _must("link", "add", "name", self.bridge, "type", "bridge")
        _must("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        _must("link", "set", self.bridge, "up")
        for host in self.hosts:
            host.create(self.bridge)

    def remove(self) -> None:
        """Every host and the bridge; safe when (partly) absent."""
        for host in self.hosts:
            host.remove()
        _ip("link", "del", self.bridge)
        self.created = False


async def start_agent(host: Host, workdir: Path, prefix: str, url: str, beacon: float) -> Process:
    """A node agent on ``host``, configured as the run's agents are."""
    python = sys.executable
    node_id = host.name
    values: dict[str, Any] = {
        "prefix": prefix,
        "instance": f"node_agent-{node_id}",
        "node_id": node_id,
        "beacon_interval": beacon,
        "capabilities": ["selfplay", "train", "evaluate", "prefetch"],
        "slots": 1,
        "min_free_disk_mb": 1,
        "min_memory_mb": 1,
        "work_dir": str(workdir / "partitioned" / node_id),
        "commands": {
            kind: [python, "-m", "workloads.mnk", kind]
            for kind in ("selfplay", "train", "evaluate", "prefetch")
        },
    }
    env = {**os.environ, **service_env("node_agent", values), "NATS_URL": url}
    log = (workdir / "logs" / f"{node_id}.log").open("ab")
    argv = ["ip", "netns", "exec", host.ns, python, "-m", "services.node_agent"]
    return await anyio.open_process(argv, env=env, cwd=workdir, stdout=log, stderr=log)


async def stop_agent(proc: Process | None) -> None:
    """Stop the agent (SIGTERM, then SIGKILL after a bound)."""
    if proc is None or proc.returncode is not None:
        return
    proc.terminate()
    with anyio.move_on_after(15):
        await proc.wait()
        return
    proc.kill()
    await proc.wait()
