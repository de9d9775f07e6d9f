"""Bad input on every subject a service listens to: no crash, no change, every one counted."""

from __future__ import annotations

import os
import random
import re

import pytest
from nats.aio.msg import Msg

from chaos.badinput import check_service, run_suite
from shared.config import BaseConfig
from shared.jobs import JobRef
from shared.service import Service
from shared.testing.cleanup import prefix_pattern, remove_streams

pytestmark = [pytest.mark.anyio]

SEED = int(os.environ.get("RINGMASTER_CHAOS_SEED") or random.SystemRandom().randrange(1 << 31))
#: Messages per subject here; ``make chaos`` sends 10,000.
PER_SUBJECT = 24


@pytest.mark.timeout(300)
async def test_every_service_holds_under_bad_input_on_every_subject(nats_url: str) -> None:
    print(f"bad-input seed {SEED}")
    try:
        reports = await run_suite(nats_url, PER_SUBJECT, SEED)
    finally:
        # run_suite names a prefix per service, bad<seed % 10000>x<n>; each reserves
        # a full-size event stream, so none may stay on the shared server.
        await remove_streams(nats_url, prefix_pattern(rf"bad{SEED % 10000}x\d+"))
    assert len(reports) >= 10  # every service package
    for report in reports:
        kinds = {listener.kind for listener in report.listeners}
        assert "request" in kinds, report.service  # at least control and metrics
        assert report.sent.invalid_core > 0
        assert set(report.sent.kinds) >= {"empty", "oversize", "wrong_schema", "random"}
    # Services that consume events through durable consumers were fed there too.
    streamed = {r.service for r in reports if any(x.kind == "stream" for x in r.listeners)}
    assert {"sync_planner", "training_coordinator", "selfplay_scheduler"} <= streamed
    failed = {r.service: r.problems for r in reports if not r.ok}
    assert not failed, f"seed {SEED}: {failed}"


class LeakyService(Service[BaseConfig]):
    """Takes raw messages past the intake: what the suite must catch."""

    name = "leaky"
    config_type = BaseConfig

    taken = 0

    async def setup(self) -> None:
        self.kv = await self.bucket("state")
        raw = self.subjects.api(self.name, "raw")
        await self.nc.subscribe(raw, cb=self._store)
        self.intake_types[raw] = JobRef  # claims a type, but never decodes with it
        await self.nc.subscribe(self.subjects.api(self.name, "hidden"), cb=self._store)

    async def _store(self, msg: Msg) -> None:
        self.taken += 1
        await self.kv.put("taken", str(self.taken).encode())


async def test_the_suite_catches_a_service_that_lets_garbage_through(
    nats_url: str, prefix: str
) -> None:
    report = await check_service(LeakyService, nats_url, prefix, 10, SEED, patience=2.0)
    assert not report.ok
    problems = "\n".join(report.problems)
    assert "leaky.hidden: subscribed, but no intake type is known" in problems
    assert "leaky.raw: " in problems and "without an error reply" in problems
    assert "KV state changed" in problems
    assert re.search(r"intake counted \d+ invalid of \d+ sent", problems)
