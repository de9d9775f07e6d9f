"""A ClusterStatus as rich tables, as a verdict, and as one-line changes.

Shared by ``ringmaster status`` (printed once), the live view of ``ringmaster up``
(refreshed) and its plain mode (one line per change). The services table merges
what beacons say (InstanceView) with what the supervisor knows (ChildView), so a
child that has not sent a beacon yet, or gave up, still has a row.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from shared.cli.client import short
from shared.contracts import ClusterStatus, Liveness, ServiceStatus

_STATUS_STYLE = {
    ServiceStatus.RUNNING: "green",
    ServiceStatus.DEGRADED: "yellow",
    ServiceStatus.ERROR: "red",
    ServiceStatus.STARTING: "cyan",
    ServiceStatus.PAUSED: "magenta",
    ServiceStatus.DRAINING: "magenta",
}
_LIVENESS_STYLE = {Liveness.ALIVE: "green", Liveness.SUSPECT: "yellow", Liveness.LOST: "red"}


class Row(msgspec.Struct, frozen=True, kw_only=True):
    """One line of the services table."""

    service: str
    instance: str
    status: str
    liveness: str
    pid: int | None
    restarts: int | None
    message: str
    version: str = ""


def service_rows(status: ClusterStatus) -> list[Row]:
    """Every instance seen by beacon, plus supervised children not seen (yet or any more)."""
    children = {(c.service, c.instance): c for c in status.children}
    rows = []
    for view in status.services:
        child = children.pop((view.service, view.instance), None)
        message = view.message
        if child is not None and child.gave_up:
            message = f"gave up after {child.restarts} restarts; {message}".rstrip("; ")
        rows.append(
            Row(
                service=view.service,
                instance=view.instance,
                status=view.status,
                liveness=view.liveness,
                pid=view.pid,
                restarts=child.restarts if child else None,
                message=message,
                version=view.version,
            )
        )
    for child in children.values():
        if child.gave_up:
            state, message = "GAVE_UP", f"gave up after {child.restarts} restarts"
        elif child.running:
            state, message = "-", "started, no beacon yet"
        elif child.last_exit_code is None:
            state, message = "-", "not started yet"
        else:
            state, message = "-", f"not running, last exit code {child.last_exit_code}"
        rows.append(
            Row(
                service=child.service,
                instance=child.instance,
                status=state,
                liveness="-",
                pid=child.pid,
                restarts=child.restarts,
                message=message,
            )
        )
    return sorted(rows, key=lambda r: (r.service, r.instance))


def problems(status: ClusterStatus) -> list[str]:
    """Why the cluster is not all well; empty when every instance is RUNNING and ALIVE."""
    found = []
    for view in status.services:
        if view.status is not ServiceStatus.RUNNING or view.liveness is not Liveness.ALIVE:
            found.append(f"{view.service}/{view.instance} is {view.status} and {view.liveness}")
    seen = {(v.service, v.instance) for v in status.services}
    for child in status.children:
        if child.gave_up:
            found.append(f"{child.service}/{child.instance}: supervisor gave up")
        elif not child.running and child.restart == "permanent":
            found.append(f"{child.service}/{child.instance} is not running")
        elif child.running and (child.service, child.instance) not in seen:
            found.append(f"{child.service}/{child.instance} has sent no beacon yet")
    return found


def _styled(value: str, styles: dict[Any, str]) -> Text:
    return Text(value, style=styles.get(value, "red" if value == "GAVE_UP" else ""))


def services_table(status: ClusterStatus) -> Table:
    """The services table: service, instance, version, status, liveness, pid, restarts, message."""
    table = Table(title="services", title_justify="left", expand=False)
    columns = ("service", "instance", "version", "status", "liveness", "pid", "restarts")
    for column in (*columns, "message"):
        table.add_column(column, overflow="fold")
    for row in service_rows(status):
        table.add_row(
            row.service,
            row.instance,
            row.version or "-",
            _styled(row.status, _STATUS_STYLE),
            _styled(row.liveness, _LIVENESS_STYLE),
            "-" if row.pid is None else str(row.pid),
            "-" if row.restarts is None else str(row.restarts),
            short(row.message, 80),
        )
    return table


def _records_table(title: str, records: list[dict[str, Any]], max_columns: int = 8) -> Table:
    # One column per field of the rows (NodeRow, ModelRow as builtins), in their order.
    columns: list[str] = []
    for record in records:
        columns += [key for key in record if key not in columns]
    table = Table(title=title, title_justify="left")
    for column in columns[:max_columns]:
        table.add_column(column, overflow="fold")
    for record in records:
        table.add_row(*(short(record.get(c, ""), 40) for c in columns[:max_columns]))
    return table


def _mapping_table(title: str, values: dict[str, Any]) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("key")
    table.add_column("value", overflow="fold")
    for key, value in values.items():
        table.add_row(key, short(value, 80))
    return table


def render(status: ClusterStatus) -> RenderableType:
    """Every table the status has: services always; nodes, jobs and models when present."""
    parts: list[RenderableType] = [services_table(status)]
    if status.nodes:
        parts.append(_records_table("nodes", msgspec.to_builtins(status.nodes)))
    if status.jobs.counts or status.jobs.active:
        counts = status.jobs.counts
        parts.append(jobs_table(status.jobs.active, title=f"jobs {short(counts, 100)}"))
    if status.models:
        parts.append(_records_table("models", msgspec.to_builtins(status.models)))
    age = max(0.0, time.time() - status.generated_at)
    parts.append(
        Text(f"prefix {status.prefix}, from {status.orchestrator}, {age:.1f}s ago", style="dim")
    )
    return Group(*parts)


def snapshot(status: ClusterStatus) -> dict[str, str]:
    """Each row's state as one comparable line, keyed by ``service/instance``."""
    lines = {}
    for row in service_rows(status):
        pid = f"pid {row.pid}" if row.pid is not None else "no process"
        if row.status == "-":  # a supervised child without beacons: say what the supervisor knows
            state = f"{row.message}, {pid}"
        else:
            state = f"{row.status} {row.liveness}, {pid}"
            if row.message and row.status != ServiceStatus.RUNNING:
                state += f": {short(row.message, 60)}"
        if row.restarts:
            state += f", {row.restarts} restarts"
        lines[f"{row.service}/{row.instance}"] = state
    return lines


def changes(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """One line per row that appeared, changed or went away."""
    lines = [f"{key}: {state}" for key, state in after.items() if before.get(key) != state]
    lines += [f"{key}: gone" for key in before if key not in after]
    return lines


def _bar(progress: float, width: int = 10) -> str:
    filled = max(0, min(width, round(progress * width)))
    return "█" * filled + "░" * (width - filled) + f" {progress:4.0%}"


def jobs_table(jobs: list[Any], title: str = "jobs") -> Table:
    """Jobs (JobRecords or their dicts): id, type, state, attempt, node, progress, error."""
    table = Table(title=title, title_justify="left")
    for column in ("job", "type", "state", "attempt", "node", "progress", "error"):
        table.add_column(column, overflow="fold")
    for job in jobs:
        record = job if isinstance(job, dict) else msgspec.to_builtins(job)
        spec = record.get("spec") or {}
        table.add_row(
            str(record.get("job_id", ""))[:12],
            str(spec.get("type", record.get("type", ""))),
            str(record.get("state", "")),
            str(record.get("attempt", "")),
            str(record.get("node_id", "")),
            _bar(float(record.get("progress") or 0.0)),
            short(record.get("error", ""), 50),
        )
    return table


def print_table(table: RenderableType) -> None:
    """Print a table at the terminal's width (wide when piped)."""
    from rich.console import Console

    Console().print(table)
