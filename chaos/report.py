"""What a chaos run prints at its end: what was injected, and the PASS/FAIL table."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from chaos.invariants import DurableRecord, Verdict
from shared.jobs import JobState

if TYPE_CHECKING:
    from chaos.runner import Options, Run


def print_summary(run: Run, record: DurableRecord) -> None:
    """Faults injected and what the durable record holds."""
    by_service = Counter(k.service for k in run.kills)
    types = Counter(e.type for e in record.events)
    states = Counter(str(j.state) for j in record.jobs.values())
    print("\n== injected")
    per = ", ".join(f"{service} {n}" for service, n in sorted(by_service.items()))
    print(f"kill -9: {len(run.kills)} ({per})")
    print(f"nats-server: {'; '.join(run.server_restarts) or 'no restart'}")
    aimed = run.aimed
    hung = ", ".join(sorted(Counter(aimed.hangs).elements())) or "none"
    print(f"SIGSTOP hangs: {len(aimed.hangs)} ({hung}); nats stalls: {aimed.stalls}")
    hosts = run.hosts
    placed = [h.name for h in hosts.servers] + ([hosts.agent.name] if hosts.agent else [])
    where = f"hosts of their own: {', '.join(placed)}; " if placed else ""
    print(f"partition: {where}{'; '.join(hosts.notes) or 'not asked for'}")
    print(f"supervisors killed: {', '.join(aimed.supervisors) or 'none'}")
    print(f"killed while starting: {len(aimed.startups)} ({', '.join(aimed.startups) or '-'})")
    if run.independent is not None and run.independent.armed:
        fired = run.independent.fired
        print(f"failpoints fired: {sum(fired.values())} ({dict(sorted(fired.items()))})")
    ledger = aimed.ledger
    print(
        f"ledger: {len(ledger.submitted)} jobs of the harness, {len(ledger.cancelled)} "
        f"cancelled, {ledger.unanswered} requests unanswered (retried)"
    )
    print("\n== durable record")
    print(
        f"events: {len(record.events)}; jobs: {len(record.jobs)} ({dict(sorted(states.items()))})"
    )
    interesting = ("SERVICE_STARTED", "JOB_RETRIED", "TRAINING_COMPLETED", "EVALUATION_COMPLETED")
    shown = {t: types[t] for t in (*interesting, "MODEL_PROMOTED", "MODEL_REJECTED")}
    print(f"event counts: {shown}")
    failed = Counter(
        f"{j.spec.type}: {(j.error or '?')[:80]}"
        for j in record.jobs.values()
        if j.state is JobState.FAILED
    )
    if failed:
        print(f"failed for good: {dict(sorted(failed.items()))}")
    print(f"blobs: {len(record.blobs)}")


def table(verdicts: list[Verdict]) -> list[str]:
    """The PASS/FAIL table as lines."""
    width = max(len(v.name) for v in verdicts)
    lines = [f"{'invariant':<{width}}  result  detail", f"{'-' * width}  ------  ------"]
    for v in verdicts:
        lines.append(f"{v.name:<{width}}  {'PASS' if v.held else 'FAIL':<6}  {v.summary}")
    held = sum(v.held for v in verdicts)
    lines.append(f"{held}/{len(verdicts)} invariants held")
    return lines


def print_table(verdicts: list[Verdict]) -> None:
    """Print the PASS/FAIL table."""
    print("\n== invariants")
    print("\n".join(table(verdicts)), flush=True)


def replay_flags(options: Options) -> str:
    """The command-line flags (besides seed and kills) that repeat ``options``."""
    flags = [
        ("--cluster", options.cluster),
        ("--failpoints", options.failpoints),
        (f"--hang-every {options.hang_every}", options.hang_every),
        ("--stall", options.stall),
        ("--ledger", options.ledger),
        ("--partition", options.partition),
        ("--supervisors", options.supervisors),
        (f"--startup-every {options.startup_every}", options.startup_every),
        (f"--interval {options.interval_s:g}", options.interval_s != 6.0),
        (f"--after {options.after_s:g}", options.after_s),
        (f"--job-managers {options.job_managers}", options.job_managers != 1),
    ]
    return "".join(f" {flag}" for flag, on in flags if on)
