"""The sync planner's pure rules: recording games, the training window, retention.

A manifest lists a game's blobs oldest first. ``games_total`` counts every game
ever recorded and never goes down (retention removes entries, not history), so
"new games since the last training" is a plain difference of two totals.

Retention keeps the newest entries holding ``retain_games`` games (the entry that
crosses the line is kept too: keeping a little more is safe, less is not). An older
entry is deleted only when its blob is referenced by nothing: no live job, no model
record, no entry inside the window (blobs are content-addressed, so the same sha256
can appear twice). Referenced old entries stay listed, to be deleted once free.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence, Set
from typing import Any, NamedTuple

import msgspec

from shared.events import JobCompleted
from shared.jobs import TERMINAL, JobRecord
from shared.training import GAMES_FILE, Manifest, ManifestEntry

_CONFIG = re.compile(r"^[A-Za-z0-9_-]+$")
_SHA = re.compile(rb"[0-9a-f]{64}")


class Selfplay(NamedTuple):
    """What a completed selfplay job adds to a manifest."""

    game: str
    entry: ManifestEntry


class RetentionPlan(NamedTuple):
    """Entries to keep in the manifest and entries to remove with their blobs."""

    keep: list[ManifestEntry]
    delete: list[ManifestEntry]


def is_game_name(name: str) -> bool:
    """Whether ``name`` can be a game (one subject token, also a KV key)."""
    return bool(_CONFIG.match(name))


# -- recording ---------------------------------------------------------------------


def selfplay_entry(done: JobCompleted, now: float) -> Selfplay | str:
    """The manifest entry of a completed selfplay job, or why there is none."""
    game = done.labels.get("game") or str(done.result.get("game", ""))
    if not is_game_name(game):
        return f"game {game!r} is not a game name"
    ref = next((o for o in done.outputs if o.name == GAMES_FILE), None)
    if ref is None:
        return f"no {GAMES_FILE} among the outputs"
    games = done.result.get("games")
    # bool is an int to Python; a "true" game count is still a bad result.
    if not isinstance(games, int) or isinstance(games, bool) or games < 0:
        return f"result games {games!r} is not a count"
    model_id = done.labels.get("model_id") or str(done.result.get("model_id", ""))
    entry = ManifestEntry(
        ref=ref, games=games, job_id=done.job_id, model_id=model_id, created_at=now
    )
    return Selfplay(game, entry)


def appended(manifest: Manifest, entry: ManifestEntry, now: float) -> Manifest | None:
    """``manifest`` with ``entry`` added; None when its job is already recorded."""
    if any(e.job_id == entry.job_id for e in manifest.entries):
        return None
    return msgspec.structs.replace(
        manifest,
        entries=[*manifest.entries, entry],
        games_total=manifest.games_total + entry.games,
        updated_at=now,
    )


def without(manifest: Manifest, job_ids: Set[str], now: float) -> Manifest | None:
    """``manifest`` without the entries of ``job_ids``; None when none is listed."""
    kept = [e for e in manifest.entries if e.job_id not in job_ids]
    if len(kept) == len(manifest.entries):
        return None
    return msgspec.structs.replace(manifest, entries=kept, updated_at=now)


# -- retention -------------------------------------------------------------------------


def retention_window(entries: Sequence[ManifestEntry], retain_games: int) -> int:
    """How many of the newest entries hold the newest ``retain_games`` games."""
    total = 0
    count = 0
    for entry in reversed(entries):
        if total >= retain_games:
            break
        total += entry.games
        count += 1
    return count


def plan_retention(
    entries: Sequence[ManifestEntry], retain_games: int, referenced: Set[str]
) -> RetentionPlan:
    """Split ``entries`` into those kept and those whose blobs may go."""
    cut = len(entries) - retention_window(entries, retain_games)
    protected = set(referenced) | {e.ref.sha256 for e in entries[cut:]}
    keep: list[ManifestEntry] = []
    delete: list[ManifestEntry] = []
    for index, entry in enumerate(entries):
        if index < cut and entry.ref.sha256 not in protected:
            delete.append(entry)
        else:
            keep.append(entry)
    return RetentionPlan(keep, delete)


def blobs_to_delete(plans: Mapping[str, RetentionPlan]) -> set[str]:
    """The sha256s of deleted entries that no game keeps an entry of."""
    kept = {e.ref.sha256 for plan in plans.values() for e in plan.keep}
    return {e.ref.sha256 for plan in plans.values() for e in plan.delete} - kept


# -- what references a blob -----------------------------------------------------------


def job_inputs(record: JobRecord) -> set[str]:
    """The blobs a job that may still run needs (none once it is terminal)."""
    if record.state in TERMINAL:
        return set()
    return {ref.sha256 for ref in record.spec.inputs}


class _Sha(msgspec.Struct):
    sha256: Any = None


class _Refers(msgspec.Struct):
    """Any record with ``ref.sha256`` (ModelRecord, Champion, and what comes later)."""

    ref: _Sha | None = None


def model_refs(raw: bytes) -> tuple[set[str], bool]:
    """The blobs a models-bucket value refers to, and whether it decoded.

    A value that does not decode may still name a blob: then every sha256-looking
    string in it counts as a reference (fail closed: keep too much, never too little).
    """
    try:
        value = msgspec.json.decode(raw, type=_Refers)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return raw_shas(raw), False
    sha = value.ref.sha256 if value.ref is not None else None
    return ({sha} if isinstance(sha, str) and sha else set()), True


def raw_shas(raw: bytes) -> set[str]:
    """Every sha256-looking string in ``raw``."""
    return {m.decode() for m in _SHA.findall(raw)}
