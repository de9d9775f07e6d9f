"""The cluster a chaos run trains: the whole self-play loop, tuned to recover fast.

Short beacons and job leases make a killed node agent's work come back in seconds
instead of minutes; the restart intensity is raised because killing is the point. No
fixed port: two runs (or a run beside ``make run``) share a machine.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from pathlib import Path

import anyio
from anyio.abc import Process

from shared.testing.builders import MNK_AGENTS

#: Every service the run supervises, and how many instances of each.
SERVICES = {
    "state_manager": 1,
    "loop_manager": 1,
    "status_metrics_collector": 1,
    "node_selector": 1,
    "job_manager": 1,
    "sync_planner": 1,
    "selfplay_scheduler": 1,
    "training_coordinator": 1,
    "node_agent": 2,
}

CLUSTER = """
[cluster]
prefix = '{prefix}'
beacon_interval = 0.5
data_dir = 'data'
http_port = -1
restart_intensity = 10
restart_period_s = 60.0
max_restart_delay_s = 2.0
[services.state_manager]
[services.loop_manager]
[services.status_metrics_collector]
[services.status_metrics_collector.config]
prometheus_port = 0
[services.node_selector]
[services.job_manager]
instances = {job_managers}
[services.job_manager.config]
lease_s = 5.0
dispatch_timeout_s = 20.0
node_lost_after_s = 3.0
retry_base_s = 0.2
retry_max_s = 2.0
[services.sync_planner]
[services.selfplay_scheduler]
[services.selfplay_scheduler.config]
games = ["3x3k3"]
interval_s = 0.5
target_job_s = 2.0
[services.selfplay_scheduler.config.games_per_job]
3x3k3 = 100
[services.training_coordinator]
[services.training_coordinator.config]
games = [{trained}]
cooldown_s = 1.0
interval_s = 0.5
takeover_after_s = 5.0
[services.training_coordinator.config.min_new_games]
3x3k3 = 300{fresh_min}
"""


def instance_counts(job_managers: int = 1) -> dict[str, int]:
    """Every supervised service's instance count, with ``job_managers`` job managers."""
    return {**SERVICES, "job_manager": job_managers}


def write_cluster_file(
    directory: Path,
    prefix: str,
    fresh: str | None = None,
    fresh_min_games: int = 0,
    job_managers: int = 1,
) -> Path:
    """Write the run's ``ringmaster.toml`` into ``directory``; its path.

    ``fresh``: a second game the training coordinator trains but the selfplay scheduler
    does not schedule (``chaos.fresh`` starts it after the faults). ``job_managers``:
    instances of the job manager sharing the requests (a queue group) and the jobs.
    """
    trained = ", ".join(f'"{c}"' for c in ["3x3k3", *([fresh] if fresh else [])])
    fresh_min = f"\n{fresh} = {fresh_min_games}" if fresh else ""
    text = CLUSTER.format(
        prefix=prefix, trained=trained, fresh_min=fresh_min, job_managers=job_managers
    )
    path = directory / "ringmaster.toml"
    path.write_text(text + MNK_AGENTS)
    return path


def replica_env(replicas: int) -> dict[str, str]:
    """Every service's (and the orchestrator's) stream and bucket replica count."""
    names = [*SERVICES, "orchestrator"]
    return {f"RINGMASTER_{name.upper()}_REPLICAS": str(replicas) for name in names}


async def spawn_up(
    workdir: Path, cluster_file: Path, url: str, replicas: int, extra: dict[str, str] | None = None
) -> Process:
    """``ringmaster up`` for the run's cluster on ``url``, logging to ``workdir/logs``."""
    env = {k: v for k, v in os.environ.items() if k != "NATS_URL"}
    env.update(extra or {})
    if replicas > 1:
        env.update(replica_env(replicas))
    argv = [sys.executable, "-m", "shared.cli", "up", "--cluster", str(cluster_file)]
    log = (workdir / "logs" / "up.log").open("ab")
    return await anyio.open_process(
        [*argv, "--no-live", "--nats-url", url],
        env=env,
        cwd=workdir,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )


async def stop_up(up: Process) -> None:
    """Stop ``ringmaster up`` in order (SIGINT); its whole process group after a bound."""
    up.send_signal(signal.SIGINT)
    with anyio.move_on_after(60.0):
        await up.wait()
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(up.pid, signal.SIGKILL)
    await up.wait()
