"""The machine, the versions and the table that ``bench/RESULTS.md`` records."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import subprocess
from collections.abc import Sequence
from pathlib import Path

import psutil

from bench.harness import Context, Row, fmt
from shared.embedded import find_nats_server_binary


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (or the platform's guess)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass  # not Linux: fall back below
    return platform.processor() or "unknown"


def nats_server_version() -> str:
    """What the pinned nats-server binary says its version is."""
    try:
        out = subprocess.run(
            [str(find_nats_server_binary()), "--version"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except OSError as exc:
        return f"unknown ({exc})"
    return out.stdout.strip().removeprefix("nats-server: ") or "unknown"


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, as ``uptime`` shows them."""
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def machine_lines(load_at_start: str) -> list[str]:
    """Markdown bullet lines describing where and with what the run happened."""
    mem = psutil.virtual_memory().total / 2**30
    return [
        f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- machine: {os.cpu_count()} CPUs ({cpu_model()}), {mem:.1f} GiB memory, "
        f"{platform.system()} {platform.release()}",
        f"- Python {platform.python_version()}, nats-py {importlib.metadata.version('nats-py')}, "
        f"nats-server {nats_server_version()}, msgspec {importlib.metadata.version('msgspec')}",
        f"- load average (1, 5, 15 min) at the start: {load_at_start}; at the end: "
        f"{load_average()}",
    ]


def _ratio(row: Row) -> str:
    return "n/a" if row.ratio is None else f"{row.ratio:.2f}"


def table(rows: Sequence[Row]) -> list[str]:
    """The goals table: one row per goal."""
    lines = [
        "| goal | figure | raw limit, same run | ratio | goal | met |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        raw = "n/a" if row.raw is None else f"{fmt(row.raw, row.unit)} ({row.raw_label})"
        lines.append(
            f"| {row.title} | {fmt(row.figure, row.unit)} | {raw} | {_ratio(row)} | "
            f"{row.goal_text} | {'yes' if row.met else 'no'} |"
        )
    return lines


def render(
    rows: Sequence[Row],
    contexts: Sequence[Context],
    failures: Sequence[str],
    analysis: Sequence[str],
    command: str,
    elapsed_s: float,
    load_at_start: str,
    sections: Sequence[tuple[str, list[str]]] = (),
) -> str:
    """The whole RESULTS.md."""
    out = ["# Benchmark results", "", *machine_lines(load_at_start)]
    out += [f"- suite time: {elapsed_s:.0f} s", ""]
    out += [
        "Every figure is measured beside its raw limit in the same run, on a nats-server of",
        "its own (loopback); the ratio is figure / raw limit. The machine is shared and has",
        "2 cores: figures vary from run to run, and between rounds of one run when other",
        "work shares the machine. A ratio is taken within one run, which removes the part",
        "of the noise that hits both sides alike, not all of it.",
        "",
        *table(rows),
        "",
    ]
    if failures:
        out += ["## Benchmarks that failed in this run", ""]
        out += [f"- {f}" for f in failures] + [""]
    out += ["## Measured beside them, for context", ""]
    out += [f"- {c.key}: {c.label}: {fmt(c.value, c.unit)}" for c in contexts] + [""]
    out += ["## How each figure was measured", ""]
    for row in rows:
        out.append(f"- **{row.title}**")
        out += [f"  - {note}" for note in row.notes]
    out.append("")
    for title, lines in sections:
        out += [f"## {title}", "", *lines, ""]
    if analysis:
        out += ["## What limits the figures", "", *analysis, ""]
    out += [
        "## Command",
        "",
        "```",
        command,
        "```",
        "",
        "`make bench` runs `.venv/bin/python -m bench` after bootstrapping the venv.",
        "",
    ]
    return "\n".join(out)
