"""A partitioned host: one node agent in its own network namespace, cut off by its link.

The namespace is joined to the root namespace by a veth pair (``10.231.<n>.1`` on the
root side, ``.2`` inside); the agent inside reaches the nats-server, which listens on
every address, through it. A partition takes the root end of the pair down: the agent's
TCP connection goes silent without being closed (no RST, no FIN), as when a switch or
a route fails, so the cluster sees the node fall silent and reaps its attempts, while
the agent, when the link comes back, resumes with attempts that were given to others.
tc netem is not available here; a link down is a total partition, which is the case
that matters. Root only: where namespaces cannot be made the run says why and goes on
without this fault.
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


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=False)


def unavailable() -> str | None:
    """Why network namespaces cannot be used here, or None when they can."""
    if os.geteuid() != 0:
        return "not root: network namespaces need CAP_NET_ADMIN"
    if shutil.which("ip") is None:
        return "no ip(8) command (iproute2)"
    probe = _ip("netns", "add", "rmprobe")
    if probe.returncode != 0:
        return f"ip netns add failed: {probe.stderr.strip()}"
    _ip("netns", "del", "rmprobe")
    return None


class Host:
    """One namespace with one node agent in it."""

    def __init__(self, tag: int, index: int = 1) -> None:
        short = f"{tag % 100000}"
        self.ns = f"rm{short}h{index}"
        self.outside = f"rm{short}r{index}"  # interface names: at most 15 characters
        self.inside = f"rm{short}n{index}"
        self.net = f"10.231.{index}"
        self.node_id = f"partitioned-{index}"
        self.process: Process | None = None
        self.cuts = 0

    def create(self) -> None:
        """The namespace, the veth pair and its addresses; raises when a step fails."""
        steps = [
            ("netns", "add", self.ns),
            ("link", "add", self.outside, "type", "veth", "peer", "name", self.inside),
            ("link", "set", self.inside, "netns", self.ns),
            ("addr", "add", f"{self.net}.1/30", "dev", self.outside),
            ("link", "set", self.outside, "up"),
            ("-n", self.ns, "addr", "add", f"{self.net}.2/30", "dev", self.inside),
            ("-n", self.ns, "link", "set", self.inside, "up"),
            ("-n", self.ns, "link", "set", "lo", "up"),
        ]
        for step in steps:
            done = _ip(*step)
            if done.returncode != 0:
                raise RuntimeError(f"ip {' '.join(step)}: {done.stderr.strip()}")

    def cut(self) -> None:
        """Partition the host: its link goes down."""
        _ip("link", "set", self.outside, "down")
        self.cuts += 1

    def heal(self) -> None:
        """End the partition."""
        _ip("link", "set", self.outside, "up")

    def remove(self) -> None:
        """Delete the pair and the namespace (deleting one end deletes both)."""
        _ip("link", "del", self.outside)
        _ip("netns", "del", self.ns)

    async def start_agent(self, workdir: Path, prefix: str, port: int, beacon: float) -> None:
        """Start a node agent inside the namespace, as the run's agents are configured."""
        python = sys.executable
        values: dict[str, Any] = {
            "prefix": prefix,
            "instance": f"node_agent-{self.node_id}",
            "node_id": self.node_id,
            "beacon_interval": beacon,
            "capabilities": ["selfplay", "train", "evaluate", "prefetch"],
            "slots": 1,
            "min_free_disk_mb": 1,
            "min_memory_mb": 1,
            "work_dir": str(workdir / "partitioned" / self.node_id),
            "commands": {
                kind: [python, "-m", "workloads.mnk", kind]
                for kind in ("selfplay", "train", "evaluate", "prefetch")
            },
        }
        env = {**os.environ, **service_env("node_agent", values)}
        env["NATS_URL"] = f"nats://{self.net}.1:{port}"
        log = (workdir / "logs" / f"{self.node_id}.log").open("ab")
        argv = [python, "-m", "services.node_agent"]
        self.process = await anyio.open_process(
            ["ip", "netns", "exec", self.ns, *argv], env=env, cwd=workdir, stdout=log, stderr=log
        )

    async def stop_agent(self) -> None:
        """Stop the agent (SIGTERM, then SIGKILL after a bound)."""
        proc = self.process
        if proc is None or proc.returncode is not None:
            return
        proc.terminate()
        with anyio.move_on_after(15):
            await proc.wait()
            return
        proc.kill()
        await proc.wait()
