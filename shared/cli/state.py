"""``ringmaster state export FILE`` and ``ringmaster state import FILE``.

Export writes every KV bucket of the catalogue to one JSON file; import writes it into
a cluster (refusing a non-empty one unless ``--force``) and bumps the cluster epoch, so
an import into an empty cluster reproduces the exported state exactly.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import anyio

from shared.cli.client import CliError, connected, subjects
from shared.snapshot import (
    SnapshotError,
    decode_snapshot,
    encode_snapshot,
    export_state,
    import_state,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``export FILE`` or ``import FILE [--force]``."""
    parser.add_argument("action", choices=["export", "import"])
    parser.add_argument("file", metavar="FILE", type=Path)
    parser.add_argument(
        "--force",
        action="store_true",
        help="import into a cluster that already has state (never deletes)",
    )


async def _export(args: argparse.Namespace) -> str:
    async with connected(args, "ringmaster-state") as nc:
        snapshot = await export_state(nc.jetstream(), subjects(args))
    await anyio.Path(args.file).write_bytes(encode_snapshot(snapshot))
    keys = sum(len(keys) for keys in snapshot.buckets.values())
    return f"exported {keys} keys from {len(snapshot.buckets)} buckets to {args.file}"


async def _import(args: argparse.Namespace) -> str:
    try:
        snapshot = decode_snapshot(await anyio.Path(args.file).read_bytes())
    except OSError as exc:
        raise CliError(f"{args.file}: {exc.strerror}", 2) from None
    except SnapshotError as exc:
        raise CliError(f"{args.file}: {exc}", 2) from None
    async with connected(args, "ringmaster-state") as nc:
        try:
            result = await import_state(nc.jetstream(), subjects(args), snapshot, force=args.force)
        except SnapshotError as exc:
            raise CliError(str(exc), 1) from None
    written = sum(result.written.values())
    return f"imported {written} keys (kept {result.kept}); cluster epoch is now {result.epoch}"


def run(args: argparse.Namespace) -> int:
    """Export or import; one line on success."""
    print(anyio.run(_export if args.action == "export" else _import, args))
    return 0
