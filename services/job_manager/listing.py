"""``list`` in pages: keyset pagination over the catalog, each reply within max_payload.

Jobs are ordered newest first by ``(submitted_at, job_id)``. A page ends at ``limit``
jobs or when one more record would take the encoded reply past the connection's
``max_payload`` (the server's limit, from its INFO), whichever comes first; its
``next_cursor`` names the last job returned, and the next page starts strictly after
it. Jobs submitted meanwhile sort before the cursor, so no job is listed twice.

A cursor is opaque to clients: URL-safe base64 of a small JSON array. Anything else
is a 400 with a one-line message.
"""

from __future__ import annotations

import base64
import binascii
import itertools
from collections import Counter
from collections.abc import Callable

import anyio
import msgspec
from nats.js.kv import KeyValue

from services.job_manager.catalog import JobCatalog
from shared.codec import encode
from shared.errors import BadRequest, RequestError
from shared.jobs import JobList, JobQuery, JobRecord
from shared.kv import read

_VERSION = 1
#: Records read from the bucket at once for one page (terminal jobs are not in memory).
FETCH_BATCH = 64
#: Room kept under max_payload for the reply's headers and envelope.
HEADROOM = 1024


class _Cursor(msgspec.Struct, array_like=True, frozen=True):
    version: int
    submitted_at: float
    job_id: str


def encode_cursor(submitted_at: float, job_id: str) -> str:
    """The opaque cursor naming the job at ``(submitted_at, job_id)``."""
    raw = msgspec.json.encode(_Cursor(_VERSION, submitted_at, job_id))
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(text: str) -> tuple[float, str]:
    """The position a cursor names; BadRequest when ``text`` is not a cursor of ``list``."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        cursor = msgspec.json.decode(raw, type=_Cursor)
    except (binascii.Error, ValueError, msgspec.DecodeError, msgspec.ValidationError):
        raise BadRequest("cursor is not one that list returned") from None
    if cursor.version != _VERSION:
        raise BadRequest(f"cursor version {cursor.version} is not supported")
    return cursor.submitted_at, cursor.job_id


class Lister:
    """Answers ``list`` from the catalog, reading terminal records by key."""

    def __init__(
        self,
        *,
        kv: KeyValue,
        catalog: JobCatalog,
        max_payload: Callable[[], int],
        counts: Counter[str],
    ) -> None:
        self.kv = kv
        self.catalog = catalog
        self.max_payload = max_payload
        self.counts = counts

    async def page(self, query: JobQuery) -> JobList:
        """One page of the jobs matching ``query``, newest first."""
        after = decode_cursor(query.cursor) if query.cursor else None
        total = self.catalog.total(query)
        entries = self.catalog.ordered(query, after)
        # The envelope with the longest cursor it could carry, then one record at a time.
        longest = encode_cursor(-1e18, "x" * 64)
        used = len(encode(JobList(jobs=[], total=total, next_cursor=longest)))
        budget = self.max_payload() - HEADROOM
        page: list[JobRecord] = []
        more = False
        while not more:
            batch = list(itertools.islice(entries, min(FETCH_BATCH, query.limit - len(page) + 1)))
            if not batch:
                break
            for record in await self._records(batch):
                if record is None:
                    continue
                size = len(encode(record)) + 1  # and its comma
                if len(page) >= query.limit or used + size > budget:
                    more = True
                    break
                page.append(record)
                used += size
        if more and not page:
            raise RequestError(f"job {batch[0][1]}'s record alone exceeds max_payload")
        last = page[-1] if more else None
        cursor = encode_cursor(last.submitted_at, last.job_id) if last else ""
        self.counts["list_pages"] += 1
        return JobList(jobs=page, total=total, next_cursor=cursor)

    async def _records(
        self, batch: list[tuple[float, str, JobRecord | None]]
    ) -> list[JobRecord | None]:
        """The batch's records in order; None for a job that left the bucket meanwhile."""
        out: list[JobRecord | None] = [rec for _, _, rec in batch]

        async def fetch(i: int, job_id: str) -> None:
            found = await read(self.kv, job_id, JobRecord)
            if found is None:
                # Retired or deleted since the catalog saw it: the watch may lag behind.
                self.counts["list_vanished"] += 1
                self.catalog.forget(job_id)
            else:
                out[i] = found[0]

        async with anyio.create_task_group() as tg:
            for i, (_, job_id, rec) in enumerate(batch):
                if rec is None:
                    tg.start_soon(fetch, i, job_id)
        return out
