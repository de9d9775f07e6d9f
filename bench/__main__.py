"""Run the benchmarks: ``python -m bench`` (``make bench``) or ``python -m bench --only NAME``.

Each benchmark is a module ``bench/bench_<name>.py`` with ``run(ctx) -> list[Row]``;
it gets a :class:`~bench.harness.Ctx` of its own (nats-server, scratch directory,
processes), closed after it whatever happens. Rows are printed as they are measured.
A full run rewrites ``bench/RESULTS.md``; ``--only`` prints without rewriting it
unless ``--results`` names a file.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

from bench.harness import Context, Ctx, Row, fmt
from bench.report import load_average, render

#: In the order of the issue's goals.
BENCHMARKS = (
    "loop",
    "ingest",
    "events",
    "restart",
    "lost",
    "cpuload",
    "jobs",
    "failover",
    "blobs",
    "rss",
    "coldstart",
    "scaling",
    "history",
    "mnk",
)
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
FINDINGS = Path(__file__).resolve().parent / "FINDINGS.md"


def print_row(row: Row) -> None:
    """One measured row, as soon as it is measured."""
    raw = "n/a" if row.raw is None else fmt(row.raw, row.unit)
    ratio = "n/a" if row.ratio is None else f"{row.ratio:.2f}"
    print(
        f"  {row.title}: {fmt(row.figure, row.unit)} | raw {raw} ({row.raw_label}) | "
        f"ratio {ratio} | goal {row.goal_text} | met {'yes' if row.met else 'no'}",
        flush=True,
    )


Section = tuple[str, list[str]]


def run_one(name: str) -> tuple[list[Row], list[Context], list[Section]]:
    """Run one benchmark in a context of its own; the context is closed even on error."""
    module = importlib.import_module(f"bench.bench_{name}")
    print(f"== {name}: {(module.__doc__ or '').strip().splitlines()[0]}", flush=True)
    start = time.monotonic()
    with Ctx(name, log=lambda text: print(text, flush=True)) as ctx:
        rows: list[Row] = module.run(ctx)
        for row in rows:
            print_row(row)
    print(f"  ({name}: {time.monotonic() - start:.1f}s)", flush=True)
    return rows, ctx.contexts, ctx.sections


def main(argv: Sequence[str] | None = None) -> int:
    """Run the selected benchmarks and write the results."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--only", choices=BENCHMARKS, action="append", help="run only NAME")
    parser.add_argument("--results", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    names = args.only or list(BENCHMARKS)
    results = args.results or (None if args.only else RESULTS)
    start = time.monotonic()
    load_at_start = load_average()
    rows: list[Row] = []
    contexts: list[Context] = []
    failures: list[str] = []
    sections: list[Section] = []
    for name in names:
        try:
            got, ctx_items, extra = run_one(name)
        except Exception as exc:  # noqa: BLE001 - one failed benchmark must not hide the others
            traceback.print_exc()
            failures.append(f"{name}: {type(exc).__name__}: {exc}")
            continue
        rows += got
        contexts += ctx_items
        sections += extra
    elapsed = time.monotonic() - start
    print(f"== done in {elapsed:.0f}s; {len(failures)} benchmark(s) failed", flush=True)
    if results is not None:
        findings = FINDINGS.read_text().splitlines() if FINDINGS.exists() else []
        # MAKELEVEL is set by make: say which of the two equivalent commands ran.
        command = "make bench" if os.environ.get("MAKELEVEL") else ".venv/bin/python -m bench"
        if argv is None and sys.argv[1:]:
            command += " " + " ".join(sys.argv[1:])
        text = render(rows, contexts, failures, findings, command, elapsed, load_at_start, sections)
        results.write_text(text)
        print(f"wrote {results}", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
