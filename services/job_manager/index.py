"""What the job manager keeps in memory: the non-terminal jobs and when nodes were last seen.

The index is fed by a KV watch on the jobs bucket (every instance's writes, so the one
reaper sees jobs another instance submitted) and by this instance's own writes at once.
Each entry keeps the revision it was seen at, so an older update never overwrites a
newer one. The watch is renewed every ``resync_s``: a new watch re-delivers every
current value, which repairs anything a lost watch missed (server restarts).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

import anyio
import msgspec
import nats.errors
from anyio.abc import TaskStatus
from nats.js.kv import KeyValue

from services.job_manager.policy import Agent
from shared.codec import decode
from shared.jobs import TERMINAL, JobList, JobQuery, JobRecord, JobState, NodeInfo
from shared.kv import read_all
from shared.liveness import Liveness, LivenessRule

log = logging.getLogger("ringmaster.job_manager.index")

IDEM_PREFIX = "idem-"
_DELETES = ("DEL", "PURGE")


class JobIndex:
    """Non-terminal job records by job_id, and the last time each node was heard from."""

    def __init__(self) -> None:
        self.jobs: dict[str, tuple[JobRecord, int]] = {}
        #: Terminal records whose event is not yet acknowledged (``announced`` False).
        self.owed: dict[str, tuple[JobRecord, int]] = {}
        #: When each node was last heard (monotonic) and the interval it announces.
        self.node_seen: dict[str, tuple[float, float]] = {}
        #: The latest incarnation of each node's agent and the jobs it runs.
        self.agents: dict[str, Agent] = {}
        self.stats: Counter[str] = Counter()
        self.loaded = False

    def apply(self, record: JobRecord, revision: int) -> None:
        """Take ``record`` at ``revision`` unless a newer one is known; drop it when terminal."""
        current = self.jobs.get(record.job_id) or self.owed.get(record.job_id)
        if current is not None and current[1] >= revision:
            return
        if record.state in TERMINAL:
            self.jobs.pop(record.job_id, None)
            if record.announced:
                self.owed.pop(record.job_id, None)
            else:
                self.owed[record.job_id] = (record, revision)
        else:
            self.owed.pop(record.job_id, None)
            self.jobs[record.job_id] = (record, revision)

    def forget(self, job_id: str) -> None:
        """Drop ``job_id`` (its key was deleted, or it is no longer non-terminal)."""
        self.jobs.pop(job_id, None)
        self.owed.pop(job_id, None)

    def unannounced(self) -> Iterator[JobRecord]:
        """Terminal records still owing their terminal event."""
        return (rec for rec, _ in self.owed.values())

    def records(self) -> Iterator[JobRecord]:
        """The non-terminal records."""
        return (rec for rec, _ in self.jobs.values())

    def saw_node(self, node_id: str, at: float | None = None, interval_s: float = 1.0) -> None:
        """A NodeInfo of ``node_id`` arrived (or was found in the nodes bucket) at
        ``at`` (monotonic; now when not given)."""
        self.node_seen[node_id] = (time.monotonic() if at is None else at, interval_s)

    def saw_info(self, info: NodeInfo) -> None:
        """A NodeInfo arrived: the node is alive, and this is its agent's incarnation."""
        self.saw_node(info.node_id, interval_s=info.interval_s)
        self.agents[info.node_id] = Agent(info.incarnation, frozenset(info.running_jobs))

    def node_lost(self, node_id: str, rule: LivenessRule, now: float | None = None) -> bool:
        """Whether ``node_id`` was heard and is now LOST by ``rule`` (``now`` monotonic).

        A node never heard of is not lost: the lease and the dispatch timeout decide.
        """
        seen = self.node_seen.get(node_id)
        if seen is None:
            return False
        at, interval_s = seen
        now = time.monotonic() if now is None else now
        return rule.state(at, now, interval_s) is Liveness.LOST

    def counts(self) -> dict[str, int]:
        """Non-terminal jobs per state."""
        counts = count_states(self.records())
        return {state: n for state, n in counts.items() if state not in TERMINAL}

    def details(self) -> dict[str, Any]:
        """What health details show of the index."""
        return {
            "loaded": self.loaded,
            "nodes_seen": len(self.node_seen),
            "unannounced": len(self.owed),
            **self.stats,
        }

    def _entry(self, entry: KeyValue.Entry) -> None:
        if entry.key.startswith(IDEM_PREFIX):
            return
        if entry.operation in _DELETES or not entry.value:
            self.forget(entry.key)
            return
        try:
            record = decode(JobRecord, entry.value)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            self.stats["undecodable"] += 1
            log.warning("jobs bucket key %s does not decode: %s", entry.key, exc)
            return
        self.apply(record, entry.revision or 0)

    async def follow(
        self,
        kv: KeyValue,
        *,
        resync_s: float,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Watch the jobs bucket until cancelled; ``started`` once the first load is done."""
        started = False
        while True:
            try:
                watcher = await kv.watchall()
            except (nats.errors.Error, TimeoutError) as exc:
                self.stats["watch_errors"] += 1
                log.warning("jobs watch could not start: %r; retrying", exc)
                await anyio.sleep(1.0)
                continue
            self.stats["watches"] += 1
            try:
                with anyio.move_on_after(resync_s):
                    async for entry in watcher:
                        if entry is None:  # every current value delivered
                            self.loaded = True
                            if not started:
                                started = True
                                task_status.started()
                            continue
                        self._entry(entry)
            finally:
                with anyio.CancelScope(shield=True):
                    await watcher.stop()  # type: ignore[no-untyped-call]


async def scan(kv: KeyValue, stats: Counter[str]) -> list[JobRecord]:
    """Every job record in the bucket, as of the scan's start (see ``read_all``)."""
    records: list[JobRecord] = []
    for key, (value, _) in (await read_all(kv)).items():
        if key.startswith(IDEM_PREFIX) or not value:
            continue
        try:
            records.append(decode(JobRecord, value))
        except (msgspec.DecodeError, msgspec.ValidationError):
            stats["undecodable"] += 1
    return records


def matches(rec: JobRecord, q: JobQuery) -> bool:
    """Whether ``rec`` passes the filters of ``q``."""
    return (
        (q.state is None or rec.state is q.state)
        and (not q.type or rec.spec.type == q.type)
        and (not q.node_id or rec.node_id == q.node_id)
    )


def select_jobs(records: Iterable[JobRecord], q: JobQuery) -> JobList:
    """The records matching ``q``, newest first, at most ``q.limit`` of them."""
    found = sorted((r for r in records if matches(r, q)), key=lambda r: -r.submitted_at)
    return JobList(jobs=found[: q.limit], total=len(found))


def count_states(records: Iterable[JobRecord]) -> dict[str, int]:
    """How many records are in each state (every state listed, zeros included)."""
    counts = dict.fromkeys((s.value for s in JobState), 0)
    for rec in records:
        counts[rec.state.value] += 1
    return counts
