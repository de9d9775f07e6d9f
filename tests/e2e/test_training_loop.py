"""The whole self-play loop as processes: selfplay -> sync -> train -> evaluate -> promote."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import anyio
import nats
import pytest

from shared.embedded import free_port
from shared.testing.bounds import COLD_START, WAIT, timeout_for
from shared.testing.builders import MNK_AGENTS
from shared.testing.helpers import stream_events
from shared.testing.procs import Lines, spawn

#: A generous bound on a cold start and a whole cycle on a loaded 2-core machine; it
#: measures nothing.
CYCLE_BOUND = COLD_START + 120.0

pytestmark = [pytest.mark.anyio, pytest.mark.e2e, timeout_for(WAIT, CYCLE_BOUND, WAIT * 2)]

CLUSTER = """
[cluster]
prefix = '{prefix}'
beacon_interval = 0.5
data_dir = 'data'
nats_port = {port}
http_port = -1
[services.state_manager]
[services.node_selector]
[services.job_manager]
[services.sync_planner]
[services.selfplay_scheduler]
[services.selfplay_scheduler.config]
games = ["3x3k3"]
interval_s = 0.5
target_job_s = 2.0
[services.selfplay_scheduler.config.games_per_job]
3x3k3 = 150
[services.training_coordinator]
[services.training_coordinator.config]
games = ["3x3k3"]
cooldown_s = 1.0
interval_s = 0.5
[services.training_coordinator.config.min_new_games]
3x3k3 = 300
"""


async def test_a_short_run_promotes_a_3x3_champion(tmp_path: Path, prefix: str) -> None:
    port = free_port()
    cluster = tmp_path / "ringmaster.toml"
    cluster.write_text(CLUSTER.format(prefix=prefix, port=port) + MNK_AGENTS)
    env = {k: v for k, v in os.environ.items() if k != "NATS_URL"}
    async with spawn("up", "--cluster", str(cluster), "--no-live", env=env) as up:
        await Lines(up.stdout).until(r"NATS:\s+nats://")
        nc = await nats.connect(f"nats://127.0.0.1:{port}")
        try:
            sub = await nc.subscribe(f"{prefix}.event.training_coordinator.model.promoted")
            promoted = await sub.next_msg(timeout=CYCLE_BOUND)
            assert b"3x3k3" in promoted.data
            types = [e.type for e in await stream_events(nc, f"{prefix}_EVENTS")]
        finally:
            await nc.close()
        up.send_signal(signal.SIGINT)
        with anyio.fail_after(WAIT * 2):
            assert await up.wait() == 0
    # The cycle, in the order it must happen, each step through its own service.
    cycle = [
        "DATA_AVAILABLE",
        "TRAINING_STARTED",
        "TRAINING_COMPLETED",
        "EVALUATION_STARTED",
        "EVALUATION_COMPLETED",
        "MODEL_PROMOTED",
    ]
    positions = [types.index(t) for t in cycle]
    assert positions == sorted(positions), types
