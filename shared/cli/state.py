"""``ringmaster state export FILE`` and ``ringmaster state import FILE``.

Export writes every KV bucket of the catalogue to one JSON file; import writes it into
a cluster (refusing a non-empty one unless ``--force``) and bumps the cluster epoch, so
an import into an empty cluster reproduces the exported state exactly. Before writing
anything, import checks every record against the Struct its bucket holds
(``state_schemas.py``) and refuses a cluster whose services answer ``$SRV.PING``
(they would act on records changing under them) unless ``--force``; it prints how
many keys it wrote to each bucket.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import anyio
import msgspec
from nats.aio.client import Client

from shared.cli.client import CliError, connected, subjects
from shared.cli.state_schemas import problems
from shared.codec import decode
from shared.snapshot import (
    SnapshotError,
    decode_snapshot,
    encode_snapshot,
    export_state,
    import_state,
)


class _Ping(msgspec.Struct, frozen=True):
    """The part of a ``$SRV.PING`` reply this reads (lenient: other fields ignored)."""

    name: str
    id: str
    metadata: dict[str, str] = {}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``export FILE`` or ``import FILE [--force]``."""
    parser.add_argument("action", choices=["export", "import"])
    parser.add_argument("file", metavar="FILE", type=Path)
    parser.add_argument(
        "--force",
        action="store_true",
        help="import into a cluster that already has state or runs services (never deletes)",
    )


async def running(nc: Client, prefix: str, wait_s: float = 1.0) -> list[str]:
    """Instances of cluster ``prefix`` that answer ``$SRV.PING`` within ``wait_s``."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    found: list[str] = []
    try:
        await nc.publish("$SRV.PING", b"", reply=inbox)
        with anyio.move_on_after(wait_s):  # every live instance answers at once
            async for msg in sub.messages:
                try:
                    ping = decode(_Ping, msg.data)
                except (msgspec.DecodeError, msgspec.ValidationError):
                    continue  # not one of ours: another kind of micro service
                if ping.metadata.get("prefix") == prefix:
                    found.append(f"{ping.name}/{ping.id}")
    finally:
        await sub.unsubscribe()
    return sorted(found)


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
    bad = problems(snapshot.buckets)
    if bad:
        raise CliError(f"{args.file}: nothing imported; {'; '.join(bad)}", 2)
    async with connected(args, "ringmaster-state") as nc:
        live = await running(nc, subjects(args).prefix)
        if live and not args.force:
            shown = ", ".join(live[:5]) + (f" and {len(live) - 5} more" if len(live) > 5 else "")
            raise CliError(f"cluster is running ({shown}): stop it first, or use --force", 1)
        try:
            result = await import_state(nc.jetstream(), subjects(args), snapshot, force=args.force)
        except SnapshotError as exc:
            raise CliError(str(exc), 1) from None
    written = sum(result.written.values())
    per = ", ".join(f"{short} {n}" for short, n in sorted(result.written.items()) if n)
    return (
        f"imported {written} keys ({per or 'none'}; kept {result.kept}); "
        f"cluster epoch is now {result.epoch}"
    )


def run(args: argparse.Namespace) -> int:
    """Export or import; one line on success."""
    print(anyio.run(_export if args.action == "export" else _import, args))
    return 0
