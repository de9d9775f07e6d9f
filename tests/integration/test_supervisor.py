"""The supervisor with real child processes (tests/integration/childproc.py stands in
for a service): restarts, policies, giving up, and no process left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest

from services.orchestrator.supervisor import Supervisor
from shared.cluster import ClusterFile, ClusterSettings, ServiceEntry
from shared.contracts import ChildView
from shared.events import EventData, ServiceGaveUp, ServiceRestarted
from shared.testing.helpers import eventually

pytestmark = pytest.mark.anyio

CHILD = str(Path(__file__).with_name("childproc.py"))
# Small delays keep a crash loop to a second or so; the first restart is immediate anyway.
SETTINGS = ClusterSettings(prefix="suptest", max_restart_delay_s=0.2)


def cluster(**services: ServiceEntry) -> ClusterFile:
    return ClusterFile(cluster=SETTINGS, services=services)


def argv_for(service: str) -> list[str]:
    return [sys.executable, CHILD, service]


def gone(pid: int) -> bool:
    """The process is dead: no longer there, or a zombie nobody reaped yet."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def reaped(pid: int) -> bool:
    """Our own child is dead and reaped: the pid no longer exists at all."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def grandchild_pids(log: Path) -> list[int]:
    return [
        int(line.split("=")[1]) for line in log.read_text().splitlines() if "grandchild=" in line
    ]


class Recorder:
    """The ``emit`` callable: keeps every event, acknowledges all."""

    def __init__(self) -> None:
        self.events: list[EventData] = []

    async def __call__(self, data: EventData) -> bool:
        self.events.append(data)
        return True

    def of(self, kind: type[Any]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


@asynccontextmanager
async def supervising(
    clusterfile: ClusterFile,
    log_dir: Path,
    grace_s: float = 5.0,
    argv: Callable[[str], list[str]] = argv_for,
) -> AsyncIterator[tuple[Supervisor, Recorder]]:
    rec = Recorder()
    sup = Supervisor(
        clusterfile,
        nats_url="nats://127.0.0.1:1",
        emit=rec,
        log_dir=log_dir,
        argv_for=argv,
        grace_s=grace_s,
    )
    async with anyio.create_task_group() as tg:
        await tg.start(sup.run)
        yield sup, rec
        tg.cancel_scope.cancel()


def view(sup: Supervisor, instance: str) -> ChildView:
    return next(v for v in sup.snapshot() if v.instance == instance)


async def test_kill_9_is_restarted_at_once_under_the_same_instance(tmp_path: Path) -> None:
    async with supervising(cluster(sleeper=ServiceEntry()), tmp_path) as (sup, rec):
        first = view(sup, "sleeper-0")
        assert first.running and first.pid is not None and first.restarts == 0
        assert first.restart == "permanent" and first.service == "sleeper"
        log = tmp_path / "sleeper-0.log"
        # Its config reached it through the environment; it wrote to its own log.
        await eventually(lambda: "instance=sleeper-0" in log.read_text(), what="first run")
        assert "prefix=suptest" in log.read_text()
        os.kill(first.pid, signal.SIGKILL)
        await eventually(lambda: rec.of(ServiceRestarted), what="ServiceRestarted")
        again = view(sup, "sleeper-0")
        assert again.running and again.pid != first.pid and again.restarts == 1
        assert again.last_exit_code == -signal.SIGKILL
        assert rec.of(ServiceRestarted) == [
            ServiceRestarted(
                service="sleeper", instance="sleeper-0", exit_code=-9, restarts=1, delay_s=0.0
            )
        ]
        # The second run has the same instance name and appends to the same log.
        await eventually(lambda: log.read_text().count("instance=sleeper-0") == 2, what="log")


async def test_temporary_is_never_restarted(tmp_path: Path) -> None:
    services = {
        "once": ServiceEntry(restart="temporary", config={"exit_code": 3}),
        "idle": ServiceEntry(restart="temporary"),
    }
    async with supervising(cluster(**services), tmp_path) as (sup, rec):
        idle = view(sup, "idle-0")
        assert idle.pid is not None
        os.kill(idle.pid, signal.SIGKILL)
        await eventually(lambda: not any(v.running for v in sup.snapshot()), what="both exited")
        await anyio.sleep(0.3)  # room for a wrongful restart to show up
        assert [(v.running, v.restarts, v.gave_up) for v in sup.snapshot()] == [
            (False, 0, False),
            (False, 0, False),
        ]
        assert view(sup, "once-0").last_exit_code == 3
        assert rec.events == []


async def test_transient_restarts_after_a_crash_only(tmp_path: Path) -> None:
    services = {
        "clean": ServiceEntry(restart="transient", config={"exit_code": 0}),
        "crashy": ServiceEntry(restart="transient", config={"exit_code": 2}),
    }
    async with supervising(cluster(**services), tmp_path) as (sup, rec):
        await eventually(lambda: view(sup, "crashy-0").restarts >= 2, what="crashy restarted")
        clean = view(sup, "clean-0")
        assert (clean.running, clean.restarts, clean.last_exit_code) == (False, 0, 0)
        assert {e.service for e in rec.of(ServiceRestarted)} == {"crashy"}
        assert rec.of(ServiceRestarted)[0].exit_code == 2


async def test_six_crashes_in_the_period_give_up_once_and_retry_at_the_cap(
    tmp_path: Path,
) -> None:
    entry = ServiceEntry(config={"exit_code": 3, "grandchild": True})
    async with supervising(cluster(crasher=entry), tmp_path) as (sup, rec):
        await eventually(lambda: rec.of(ServiceGaveUp), what="ServiceGaveUp")
        assert sup.gave_up == ["crasher-0"]
        # Giving up is not final: it keeps restarting, at the cap, and says so once.
        await eventually(lambda: len(rec.of(ServiceRestarted)) >= 8, what="restarts go on")
        state = view(sup, "crasher-0")
        assert state.gave_up and state.restarts >= 8
        delays = [e.delay_s for e in rec.of(ServiceRestarted)]
        assert delays[0] == 0.0
        assert all(0 < d <= SETTINGS.max_restart_delay_s for d in delays[1:5])
        assert all(d == SETTINGS.max_restart_delay_s for d in delays[5:])
        assert rec.of(ServiceGaveUp) == [
            ServiceGaveUp(
                service="crasher", instance="crasher-0", restarts=5, window_s=60.0, last_exit_code=3
            )
        ]
        # Each run left a grandchild behind in its group; the supervisor swept them all.
        grands = grandchild_pids(tmp_path / "crasher-0.log")
        assert len(grands) >= 6
        await eventually(lambda: all(gone(p) for p in grands[:6]), what="grandchildren gone")


async def test_disabled_is_not_started_and_unstartable_gives_up(tmp_path: Path) -> None:
    services = {
        "off": ServiceEntry(enabled=False),
        "missing": ServiceEntry(instances=2),
    }

    def nowhere(service: str) -> list[str]:
        return [str(tmp_path / "no-such-program")]

    async with supervising(cluster(**services), tmp_path, argv=nowhere) as (sup, rec):
        assert [v.instance for v in sup.snapshot()] == ["missing-0", "missing-1"]
        await eventually(lambda: len(sup.gave_up) == 2, what="both gave up")
        await anyio.sleep(0.5)  # still tried at the cap: no second give-up announced
        assert all(v.pid is None and not v.running for v in sup.snapshot())
        # Never started, so never "restarted"; the give-up still says what happened.
        assert rec.of(ServiceRestarted) == []
        assert [e.last_exit_code for e in rec.of(ServiceGaveUp)] == [None, None]


async def test_cancelling_run_leaves_no_process(tmp_path: Path) -> None:
    services = {
        "sleeper": ServiceEntry(instances=2, config={"grandchild": True}),
        "stubborn": ServiceEntry(config={"ignore_term": True}),
    }
    async with supervising(cluster(**services), tmp_path, grace_s=0.5) as (sup, _):
        pids = [v.pid for v in sup.snapshot()]
        assert len(pids) == 3 and all(p is not None for p in pids)
        # Wait until the children have started their grandchildren (and their handlers).
        logs = [tmp_path / f"sleeper-{i}.log" for i in range(2)]
        await eventually(lambda: all(grandchild_pids(log) for log in logs), what="grandchildren")
        await eventually(lambda: "instance=" in (tmp_path / "stubborn-0.log").read_text())
        grands = [p for log in logs for p in grandchild_pids(log)]
    assert all(p is not None and reaped(p) for p in pids)
    assert not any(v.running for v in sup.snapshot())
    assert view(sup, "stubborn-0").last_exit_code == -signal.SIGKILL
    assert view(sup, "sleeper-0").last_exit_code == -signal.SIGTERM
    await eventually(lambda: all(gone(p) for p in grands), what="grandchildren gone")


async def test_children_die_with_a_killed_supervisor(tmp_path: Path) -> None:
    argv = [sys.executable, CHILD, "--supervise", str(tmp_path)]
    async with await anyio.open_process(argv, stderr=subprocess.DEVNULL) as host:
        try:
            assert host.stdout is not None
            line = b""
            while not line.endswith(b"\n"):
                line += await host.stdout.receive()
            pids: list[int] = json.loads(line)
            assert len(pids) == 2 and not any(gone(p) for p in pids)
        finally:
            host.kill()  # SIGKILL: the supervisor gets no chance to clean up
        assert await host.wait() == -signal.SIGKILL
    await eventually(lambda: all(gone(p) for p in pids), timeout=20.0, what="children die")


async def test_a_condemned_hung_child_is_killed_and_restarted(tmp_path: Path) -> None:
    services = {
        "sleeper": ServiceEntry(),
        "stubborn": ServiceEntry(restart="transient", config={"ignore_term": True}),
    }
    async with supervising(cluster(**services), tmp_path) as (sup, rec):
        await eventually(lambda: "instance=" in (tmp_path / "stubborn-0.log").read_text())
        hung = {name: view(sup, f"{name}-0").pid for name in services}
        for pid in hung.values():
            assert pid is not None
            os.kill(pid, signal.SIGSTOP)  # hung: alive, silent, deaf to SIGTERM for now
        # A verdict about another process of the instance, or another service, is ignored.
        assert not sup.condemn("sleeper", "sleeper-0", 1, "stale verdict")
        assert not sup.condemn("other", "sleeper-0", hung["sleeper"] or 0, "wrong service")
        for name, pid in hung.items():
            assert pid is not None and sup.condemn(name, f"{name}-0", pid, "test")
        await eventually(lambda: len(rec.of(ServiceRestarted)) == 2, what="both restarted")
        after = {name: view(sup, f"{name}-0") for name in services}
        # SIGCONT let the stopped sleeper act on SIGTERM; the stubborn one needed SIGKILL,
        # and though "transient", a hung child killed is an abnormal end: restarted.
        assert after["sleeper"].last_exit_code == -signal.SIGTERM
        assert after["stubborn"].last_exit_code == -signal.SIGKILL
        assert all(v.running and v.pid != hung[n] for n, v in after.items())
        assert all(reaped(p or 0) for p in hung.values())


async def test_a_child_given_up_on_comes_back_when_the_cause_passes(tmp_path: Path) -> None:
    fixed = tmp_path / "fixed"
    settings = ClusterSettings(
        prefix="suptest", max_restart_delay_s=0.2, restart_intensity=2, restart_period_s=1.0
    )
    entry = ServiceEntry(config={"crash_unless": str(fixed)})
    clusterfile = ClusterFile(cluster=settings, services={"flaky": entry})
    async with supervising(clusterfile, tmp_path) as (sup, rec):
        await eventually(lambda: sup.gave_up == ["flaky-0"], what="gave up")
        fixed.touch()  # the outage is over
        await eventually(lambda: view(sup, "flaky-0").running, what="running again")
        # One whole period of running clears it: no operator needed.
        await eventually(lambda: sup.gave_up == [], what="cleared after a stable run")
        assert not view(sup, "flaky-0").gave_up
        assert len(rec.of(ServiceGaveUp)) == 1
