"""Measure the self-play loop's outcome: 3x3 against perfect play, bigger boards against random.

Not a benchmark that ``python -m bench`` runs: a script that prints a Markdown table
to copy into bench/RESULTS.md. Where the models come from:

- ``--model FILE ...``: model files (each says its config);
- ``--nats-url URL [--prefix P]``: the champions of a running cluster (the models
  bucket and the data object store), with the Elo of every champion so far;
- ``--data-dir DIR``: the same from a stopped cluster's data directory (``.ringmaster``):
  an embedded nats-server is started on ``DIR/nats`` for the reading;
- ``--loop N``: no cluster at all: N generations of the in-process learning loop per
  config (``python -m workloads.mnk loop``), then its champions.

Usage: ``.venv/bin/python bench/mnk_outcome.py --data-dir .ringmaster``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from shared.training import MNK_GAMES

#: Games against the random player per model.
RANDOM_GAMES = 1000


def measure(path: Path, games: int) -> dict[str, Any]:
    """The outcome figures of one model file."""
    from workloads.mnk.__main__ import solve, vs_random
    from workloads.mnk.models import load_model

    model = load_model(path)
    game = model.game.name
    row: dict[str, Any] = {"game": game, "model_id": model.model_id, "kind": model.kind}
    if game == "3x3k3":
        solved = solve(path, game)
        row["minimax"] = (
            f"{solved['as_x']['losses']} / {solved['as_o']['losses']} losses "
            f"in {solved['as_x']['games']} / {solved['as_o']['games']} games"
        )
        row["never_loses"] = solved["never_loses"]
    rates = vs_random(path, game, games, seed=2024)
    row["vs_random"] = (
        f"{rates['win_rate']:.3f} / {rates['draw_rate']:.3f} / {rates['loss_rate']:.3f}"
    )
    row["win_rate"] = rates["win_rate"]
    return row


async def fetch_champions(url: str, prefix: str, out: Path) -> list[dict[str, Any]]:
    """Download each game's champion into ``out``; returns their records and history."""
    from shared.blobs import BlobStore, DataStore
    from shared.bus import connect
    from shared.kv import keys_matching, read
    from shared.subjects import Subjects
    from shared.training import Champion, ModelRecord

    subjects = Subjects(prefix)
    nc = await connect(url, name="mnk-outcome")
    try:
        js = nc.jetstream()
        kv = await js.key_value(subjects.bucket("models"))
        blobs = BlobStore(DataStore(js, subjects.data_store))
        keys = await keys_matching(kv)
        found = []
        for game in sorted(MNK_GAMES):
            entry = await read(kv, f"champion.{game}", Champion)
            if entry is None:
                continue
            champion = entry[0]
            path = out / f"{game}-{champion.model_id}.npz"
            path.write_bytes(await blobs.get_bytes(champion.ref))
            history = []
            for key in keys:
                if key.startswith(f"model.{game}."):
                    record = await read(kv, key, ModelRecord)
                    if record is not None and record[0].status in ("champion", "archived"):
                        history.append(record[0])
            history.sort(key=lambda r: r.generation)
            found.append(
                {
                    "game": game,
                    "path": path,
                    "generation": champion.generation,
                    "elo": champion.elo,
                    "history": [(r.generation, round(r.elo, 1)) for r in history],
                }
            )
        return found
    finally:
        await nc.close()


def from_data_dir(data_dir: Path, prefix: str, out: Path) -> list[dict[str, Any]]:
    """Champions of a stopped cluster: serve its JetStream directory for a moment."""
    from shared.embedded import EmbeddedServer, free_port

    server = EmbeddedServer(port=free_port(), store_dir=data_dir / "nats")
    server.start()
    try:
        return asyncio.run(fetch_champions(server.url, prefix, out))
    finally:
        server.stop()


def from_loop(generations: int, out: Path) -> list[dict[str, Any]]:
    """Run the in-process loop per game; its champions."""
    from workloads.mnk.loop import run_loop

    found = []
    for game, games in (("3x3k3", 1000), ("4x4k3", 1000), ("5x5k4", 1000)):
        opts = argparse.Namespace(
            game=game,
            generations=generations,
            games=games,
            eval_games=200,
            window=8,
            exploration=0.1,
            seed=1,
            workdir=out / game,
        )
        records, champion = run_loop(opts)
        if champion is not None:
            last = records[-1]
            found.append(
                {
                    "game": game,
                    "path": champion,
                    "generation": sum(r["promoted"] for r in records),
                    "elo": None,
                    "history": [],
                    "loop_seconds": f"{last['elapsed']} s wall, {last['cpu']} s CPU",
                }
            )
    return found


def table(rows: list[dict[str, Any]]) -> str:
    """The Markdown table of the measured rows."""
    lines = [
        "| game | model | generation | Elo | vs minimax (X / O) | vs random (W / D / L) |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        elo = "" if row.get("elo") is None else f"{row['elo']:.1f}"
        lines.append(
            f"| {row['game']} | {row['model_id']} ({row['kind']}) | {row.get('generation', '')}"
            f" | {elo} | {row.get('minimax', 'n/a')} | {row['vs_random']} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Find the models, measure them, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", type=Path, nargs="+", help="model files")
    source.add_argument("--nats-url", help="a running cluster's NATS URL")
    source.add_argument("--data-dir", type=Path, help="a stopped cluster's data directory")
    source.add_argument("--loop", type=int, metavar="N", help="N generations, no cluster")
    parser.add_argument("--prefix", default="ringmaster")
    parser.add_argument("--games", type=int, default=RANDOM_GAMES, help="games against random")
    args = parser.parse_args(argv)
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch)
        if args.model:
            found = [{"path": path} for path in args.model]
        elif args.nats_url:
            found = asyncio.run(fetch_champions(args.nats_url, args.prefix, out))
        elif args.data_dir:
            found = from_data_dir(args.data_dir.resolve(), args.prefix, out)
        else:
            found = from_loop(args.loop, out)
        if not found:
            print("no champions found", file=sys.stderr)
            return 1
        rows = []
        for item in found:
            row = {**item, **measure(Path(item["path"]), args.games)}
            rows.append(row)
            if item.get("history"):
                print(f"{row['game']} champions (generation, Elo): {item['history']}")
            if item.get("loop_seconds"):
                print(f"{row['game']} loop: {item['loop_seconds']}")
    print(table(rows))
    print(f"\nmeasured in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
