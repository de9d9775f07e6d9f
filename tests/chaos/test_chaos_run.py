"""The small chaos run: 10 kill -9s, a nats-server restart, a NATS stall, SIGSTOP hangs,
every failpoint armed once, and jobs of the harness's own, during training, with two
job managers sharing the jobs (the harder case: a killed or hung one leaves its
requests and its reaper's lease to the other)."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from chaos.runner import Options, chaos_run
from chaos.setup import instance_counts
from shared.failpoints import POINTS

pytestmark = [pytest.mark.e2e]

#: A fixed seed replays a failure: RINGMASTER_CHAOS_SEED=<printed seed> make test.
SEED = int(os.environ.get("RINGMASTER_CHAOS_SEED") or random.SystemRandom().randrange(1 << 31))


@pytest.mark.timeout(420)
def test_a_short_training_run_under_kills_and_a_server_restart_loses_nothing(
    tmp_path: Path,
) -> None:
    print(f"chaos seed {SEED}")
    options = Options(
        kills=10,
        seed=SEED,
        interval_s=2.5,
        workdir=tmp_path,
        failpoints=True,
        hang_every=6,
        stall=True,
        ledger=True,
        job_managers=2,
    )
    run, record, verdicts = chaos_run(options)
    # The faults really happened: ten kills, one restart, and processes came back.
    assert len(run.kills) == 10
    assert run.server_restarts == ["single server restarted"]
    assert run.aimed.stalls == 1 and len(run.aimed.hangs) >= 1
    assert run.independent is not None and run.aimed.ledger.submitted
    # A short run reaches most points, not always every one (a promotion may not come).
    assert len(run.independent.fired) >= len(POINTS) // 2, run.independent.fired
    started = sum(1 for e in record.events if e.type == "SERVICE_STARTED")
    assert started >= sum(instance_counts(2).values()) + len(run.kills)  # each victim came back
    assert record.jobs, "the cluster ran no job at all"
    failed = [f"{v.name}: {v.summary}" for v in verdicts if not v.held]
    assert not failed, f"seed {SEED}: {failed}"
