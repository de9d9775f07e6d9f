"""The job lifecycle as sequences against a real job manager on a real nats-server.

The same properties as tests/unit/test_job_lifecycle_stateful.py, this time through
the job manager's API and report endpoint: Hypothesis submits jobs, reports on them
as their node would (live, late, ghostly, or from another node) and cancels them, in
any order, while the real dispatcher and reaper act on their own. Each step reads
every record back: fencing never goes back, and a terminal state never changes. At
the end of each sequence every job is cancelled if it is still live, and each has
exactly one terminal event in the events stream.

Each step is a round trip, so the sequences are fewer and shorter than in the unit
test (the suite's profile otherwise applies, deadline included).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import anyio
import nats
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)
from nats.aio.client import Client

from services.job_manager.service import JobManagerService
from shared.codec import decode, encode
from shared.jobs import (
    TERMINAL,
    JobRecord,
    JobRef,
    JobReport,
    JobSpec,
    JobState,
    Requirements,
)
from shared.subjects import Subjects
from shared.testing.builders import report_of
from shared.testing.fixtures import service_config
from shared.testing.helpers import stream_events

TERMINAL_EVENTS = {"JOB_COMPLETED", "JOB_FAILED", "JOB_CANCELLED"}
PHASES = ("started", "progress", "completed", "failed")


class Live:
    """The job manager and a client, running on the portal's event loop."""

    def __init__(self, portal: BlockingPortal, nc: Client, prefix: str) -> None:
        self.portal, self.nc, self.subjects = portal, nc, Subjects(prefix)

    def call(self, method: str, body: object) -> Any:
        async def request() -> Any:
            subject = self.subjects.api("job_manager", method)
            return await self.nc.request(subject, encode(body), timeout=5)

        return self.portal.call(request)

    def get(self, job_id: str) -> JobRecord:
        return decode(JobRecord, self.call("get", JobRef(job_id=job_id)).data)

    def report(self, node: str, report: JobReport) -> None:
        async def send() -> None:
            await self.nc.request(self.subjects.node_report(node), encode(report), timeout=5)

        self.portal.call(send)

    def terminal_events(self, job_ids: set[str]) -> dict[str, int]:
        async def read() -> dict[str, int]:
            found = dict.fromkeys(job_ids, 0)
            for event in await stream_events(self.nc, self.subjects.events_stream):
                data = event.data or {}
                # JOB_FAILED goes out for every failed attempt; only the last is terminal.
                final = event.type != "JOB_FAILED" or data.get("permanent") is True
                if event.type in TERMINAL_EVENTS and final and data.get("job_id") in found:
                    found[data["job_id"]] += 1
            return found

        return self.portal.call(read)


class LiveJobLifecycle(RuleBasedStateMachine):
    """A few jobs pinned to node n1 of a real job manager."""

    live: Live
    jobs = Bundle("jobs")

    def __init__(self) -> None:
        super().__init__()
        self.seen: dict[str, JobRecord] = {}

    @precondition(lambda self: len(self.seen) < 3)
    @rule(target=jobs, max_attempts=st.integers(1, 3))
    def submit(self, max_attempts: int) -> multiple[str]:
        spec = JobSpec(
            type="shell",
            args={"argv": [sys.executable, "-c", "pass"]},
            requirements=Requirements(capability="shell", node_id="n1"),
            max_attempts=max_attempts,
        )
        rec = decode(JobRecord, self.live.call("submit", spec).data)
        self.seen[rec.job_id] = rec
        return multiple(rec.job_id)

    @rule(job_id=jobs, end=st.sampled_from(("completed", "progress", "failed")))
    def agent_reports(self, job_id: str, end: str) -> None:
        """Node n1 reports on the live attempt as its agent would: started, then ``end``."""
        rec = self.live.get(job_id)
        phase = "started" if rec.state is JobState.DISPATCHED else end
        self.live.report("n1", report_of(rec, phase, "n1"))

    @rule(
        job_id=jobs,
        phase=st.sampled_from(PHASES),
        wrong=st.sampled_from(("ghost", "late", "foreign")),
    )
    def wrong_report(self, job_id: str, phase: str, wrong: str) -> None:
        """A report that must be refused: a ghost of an older fencing (a dispatch whose
        publish failed), an attempt that is over, or another node's word."""
        rec = self.live.get(job_id)
        node = "n2" if wrong == "foreign" else "n1"
        age, ghost = int(wrong == "late"), int(wrong == "ghost")
        report = report_of(rec, phase, node, age, ghost)
        self.live.report(node, report)
        after = self.live.get(job_id)
        # Refused, the record as it was. (A PENDING job may be dispatched again by the
        # job manager meanwhile: that changes it legitimately.)
        if rec.state is not JobState.PENDING:
            assert (after.state, after.attempt, after.fencing) == (
                rec.state,
                rec.attempt,
                rec.fencing,
            ), (report, rec, after)

    @rule(job_id=jobs, rarely=st.integers(0, 3))
    def cancel(self, job_id: str, rarely: int) -> None:
        if rarely == 3:  # Hypothesis favours low draws: cancels stay rare
            self.live.call("cancel", JobRef(job_id=job_id, reason="sequence"))

    @invariant()
    def fencing_grows_and_terminal_states_absorb(self) -> None:
        for job_id, before in self.seen.items():
            now = self.live.get(job_id)
            assert now.fencing >= before.fencing, (before, now)
            assert now.attempt <= now.spec.max_attempts
            if before.state in TERMINAL:
                assert (now.state, now.finished_at, now.result) == (
                    before.state,
                    before.finished_at,
                    before.result,
                ), (before, now)
            self.seen[job_id] = now

    def teardown(self) -> None:
        ids = set(self.seen)
        for job_id in ids:  # a terminal job refuses this (409): it stays as it is
            self.live.call("cancel", JobRef(job_id=job_id, reason="end of sequence"))
        for _ in range(200):  # the terminal events go out after the record is written
            if all(self.live.get(j).announced for j in ids):
                break
            self.live.portal.call(anyio.sleep, 0.05)
        assert all(self.live.get(j).state in TERMINAL for j in ids)
        counts = self.live.terminal_events(ids)
        assert counts == dict.fromkeys(ids, 1), counts


@pytest.fixture
def live(nats_url: str, prefix: str) -> Iterator[Live]:
    """A job manager on the shared server, and a client, on a loop of their own."""
    with ExitStack() as stack:
        portal = stack.enter_context(start_blocking_portal("asyncio"))
        nc: Client = portal.call(lambda: nats.connect(nats_url, connect_timeout=5))
        stack.callback(portal.call, nc.close)
        # Long timeouts: the reaper stays out of the way unless a report asks for it.
        config = service_config(
            JobManagerService,
            nats_url,
            prefix,
            lease_s=600.0,
            dispatch_timeout_s=600.0,
            retry_base_s=0.05,
            retry_max_s=0.1,
        )
        manager = portal.call(_build, config)  # its loop-bound parts need the loop
        stack.enter_context(portal.wrap_async_context_manager(manager.running()))
        yield Live(portal, nc, prefix)


async def _build(config: Any) -> JobManagerService:
    return JobManagerService(config)


def test_job_lifecycle_sequences_against_a_real_job_manager(live: Live) -> None:
    LiveJobLifecycle.live = live
    run_state_machine_as_test(
        LiveJobLifecycle,
        settings=settings(settings.default, max_examples=6, stateful_step_count=15),
    )
