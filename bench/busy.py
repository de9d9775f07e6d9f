"""Where a running cluster's CPU goes, read from /proc: cores busy, control plane, jobs.

``python -m bench.busy [--pid PID] [--warmup S] [--seconds S]`` attaches to a running
``ringmaster up`` (found by its command line when ``--pid`` is not given) and prints,
over the measured span after the warm-up:

- **cores busy**: the share of all cores not idle, from ``/proc/stat`` (every process
  on the machine counts, so measure on a quiet machine);
- **control plane**: CPU of ``ringmaster up``, the orchestrator, nats-server and every
  service process (node agents included), from each one's ``utime + stime``;
- **jobs**: CPU of the job processes, exactly: each node agent waits for its jobs, so
  a finished job's CPU lands in the agent's ``cutime + cstime``, and the jobs still
  running at either end are read directly.

The control plane's share is of the busy CPU, as the issue states its goal.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcTimes:
    """One process's CPU seconds: its own and its waited-for children's."""

    pid: int
    ppid: int
    own: float
    children: float
    cmdline: str


def read_proc(pid: int) -> ProcTimes | None:
    """The CPU times of ``pid``, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode()
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: fields start after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return ProcTimes(pid, int(fields[1]), (utime + stime) / TICK, (cutime + cstime) / TICK, cmd)


def all_procs() -> dict[int, ProcTimes]:
    """Every process readable now, by pid."""
    found: dict[int, ProcTimes] = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (p := read_proc(int(name))) is not None:
            found[p.pid] = p
    return found


def descendants(root: int, procs: dict[int, ProcTimes]) -> set[int]:
    """``root`` and every process below it."""
    kids: dict[int, list[int]] = {}
    for p in procs.values():
        kids.setdefault(p.ppid, []).append(p.pid)
    seen, todo = {root}, [root]
    while todo:
        for child in kids.get(todo.pop(), []):
            if child not in seen:
                seen.add(child)
                todo.append(child)
    return seen


def cpu_stat() -> tuple[float, float]:
    """(busy, total) seconds of all cores since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(x) for x in f.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # guest time is already inside user
    return (total - idle) / TICK, total / TICK


@dataclass(frozen=True)
class Snapshot:
    """The cluster's CPU accounting at one moment."""

    at: float
    busy: float
    total: float
    control: float
    jobs: float
    control_pids: frozenset[int]


def _is_agent(p: ProcTimes) -> bool:
    return "node_agent" in p.cmdline


def snapshot(root: int) -> Snapshot:
    """Read the tree under ``root``: control plane processes and job processes."""
    busy, total = cpu_stat()
    procs = all_procs()
    tree = descendants(root, procs)
    agents = {pid for pid in tree if _is_agent(procs[pid])}
    job_pids: set[int] = set()
    for agent in agents:
        job_pids |= descendants(agent, procs) - {agent}
    control = tree - job_pids
    return Snapshot(
        at=time.monotonic(),
        busy=busy,
        total=total,
        control=sum(procs[p].own for p in control),
        # Finished jobs were waited for by their agent; running ones count directly.
        jobs=sum(procs[a].children for a in agents) + sum(procs[p].own for p in job_pids),
        control_pids=frozenset(control),
    )


@dataclass(frozen=True)
class Busy:
    """What the span between two snapshots used."""

    seconds: float
    cores: int
    busy_share: float
    control_cores: float
    job_cores: float
    control_share_of_busy: float
    other_cores: float


def between(a: Snapshot, b: Snapshot, cores: int) -> Busy:
    """The CPU use between two snapshots (processes that came and went are not lost:
    a restarted service's CPU before its restart is not counted, which only lowers the
    control plane's figure by what a dead process used)."""
    wall = b.at - a.at
    busy = b.busy - a.busy
    control = b.control - a.control
    jobs = b.jobs - a.jobs
    return Busy(
        seconds=wall,
        cores=cores,
        busy_share=busy / max(b.total - a.total, 1e-9),
        control_cores=control / wall,
        job_cores=jobs / wall,
        control_share_of_busy=control / max(busy, 1e-9),
        other_cores=max(0.0, busy - control - jobs) / wall,
    )


def find_up() -> int:
    """The pid of the running ``ringmaster up``."""
    pattern = re.compile(r"(^|[ /])ringmaster up( |$)")
    found = [p.pid for p in all_procs().values() if pattern.search(p.cmdline)]
    if not found:
        raise SystemExit("busy: no running `ringmaster up` found (start `make run`, or pass --pid)")
    return min(found)


def measure(root: int, warmup_s: float, seconds: float) -> Busy:
    """Sleep through the warm-up, then measure ``seconds``."""
    time.sleep(warmup_s)
    a = snapshot(root)
    time.sleep(seconds)
    return between(a, snapshot(root), os.cpu_count() or 1)


def report(b: Busy) -> Iterable[str]:
    """Lines for a person."""
    yield f"measured {b.seconds:.0f} s on {b.cores} cores"
    yield f"cores busy: {100 * b.busy_share:.1f} %"
    yield f"jobs: {b.job_cores:.2f} cores"
    yield f"control plane: {b.control_cores:.2f} cores"
    yield f"control plane share of busy CPU: {100 * b.control_share_of_busy:.1f} %"
    yield f"other processes on the machine: {b.other_cores:.2f} cores"


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the arguments, measure, print."""
    parser = argparse.ArgumentParser(prog="python -m bench.busy", description=__doc__)
    parser.add_argument("--pid", type=int, help="pid of `ringmaster up` (default: find it)")
    parser.add_argument("--warmup", type=float, default=30.0, help="seconds before measuring")
    parser.add_argument("--seconds", type=float, default=180.0, help="seconds measured")
    args = parser.parse_args(argv)
    if args.warmup < 0 or args.seconds <= 0:
        parser.error("--warmup must be >= 0 and --seconds > 0")
    root = args.pid or find_up()
    for line in report(measure(root, args.warmup, args.seconds)):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
