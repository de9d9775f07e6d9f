"""The ``seal`` endpoint: name a node's uploaded chunks as a blob, after checking them.

Node users may publish chunks but no meta message (``shared/node_permissions.py``),
so every name in ``P_data`` written for a node goes through here. A seal:

1. refuses a request that is wrong on its face (400: the name is not the sha256, the
   chunk count does not fit the size, the nuid is not one or two tokens);
2. refuses a name that already holds other content (409); content is never replaced;
3. counts the chunk subject's messages (one stream-info call): exactly ``chunks``,
   else 400 (missing chunks, or extra ones a reader that reads to the end would see);
4. reads the chunks back and refuses (400) unless they hash to ``sha256`` and add up
   to ``size``;
5. writes the meta message with an expected last-subject-sequence, so two seals of
   one name at once cannot both write; the loser finds the winner's meta.

A name already stored with the same content is a success (``sealed`` false); the
duplicate chunks are purged when they are a node's (``<node>.<nuid>``) and verified
to be that content, so no other name can refer to them. Nothing else is deleted.
Every outcome is counted (``seals`` in health details).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter

import nats.errors
from nats.js.api import Header, ObjectInfo
from nats.js.client import JetStreamContext
from nats.js.errors import APIError, NotFoundError

from shared.blob_seal import SealReply, SealRequest, problem
from shared.blob_wire import (
    STORE_CHUNK,
    Sent,
    WireError,
    chunk_subject,
    digest_of,
    meta_info,
    meta_subject,
    read_chunks,
    write_meta,
)
from shared.errors import BadRequest, Conflict

log = logging.getLogger("ringmaster.sync_planner.sealing")

#: JetStream's error code for a failed expected-last-subject-sequence check.
WRONG_LAST_SEQUENCE = 10071


class Sealer:
    """Checks uploads and writes their meta messages (the sync planner owns P_data)."""

    def __init__(self, js: JetStreamContext, bucket: str, read_timeout_s: float) -> None:
        self.js = js
        self.bucket = bucket
        self.stream = f"OBJ_{bucket}"
        self.read_timeout_s = read_timeout_s
        #: sealed, already_stored, duplicates_purged and refused_<why>.
        self.counts: Counter[str] = Counter()
        self._logged: set[str] = set()

    def _refuse(self, why: str, request: SealRequest, error: BadRequest | Conflict) -> None:
        self.counts[f"refused_{why}"] += 1
        if why not in self._logged:  # the first of each kind is enough in the log
            self._logged.add(why)
            log.warning("seal of %.12s refused (%s): %s", request.name, why, error)
        raise error

    async def seal(self, request: SealRequest) -> SealReply:
        """Check the upload and name it; raises BadRequest or Conflict when refused."""
        why = problem(request, STORE_CHUNK)
        if why is not None:
            self._refuse("invalid", request, BadRequest(why))
        existing, seq = await self._current(request.name)
        if existing is not None and existing.nuid == request.nuid:
            self._check_same(request, existing)
            self.counts["already_stored"] += 1  # a repeated seal: nothing to do
            return _reply(request, existing.nuid, sealed=False)
        if existing is not None:
            self._check_same(request, existing)
        await self._verify(request)
        if existing is not None:
            return await self._duplicate(request, existing)
        try:
            sent = Sent(request.nuid, request.sha256, request.size, request.chunks)
            await write_meta(
                self.js,
                meta_info(self.bucket, request.name, sent, request.chunk_size),
                headers={Header.EXPECTED_LAST_SUBJECT_SEQUENCE: str(seq)},
            )
        except APIError as exc:
            if exc.err_code != WRONG_LAST_SEQUENCE:
                raise
            # Another seal of this name won the race: judge against what it wrote.
            existing, seq = await self._current(request.name)
            if existing is None:
                raise
            self._check_same(request, existing)
            return await self._duplicate(request, existing)
        self.counts["sealed"] += 1
        return _reply(request, request.nuid, sealed=True)

    async def _current(self, name: str) -> tuple[ObjectInfo | None, int]:
        """The live meta of ``name`` (None when absent or deleted) and its sequence."""
        try:
            msg = await self.js.get_last_msg(self.stream, meta_subject(self.bucket, name))
        except NotFoundError:
            return None, 0
        try:
            info = ObjectInfo.from_response(json.loads(msg.data or b"{}"))
        except (ValueError, TypeError, KeyError) as exc:
            # Only trusted writers write meta: a bad one is a bug elsewhere, never
            # a reason to write over the name.
            raise Conflict(f"the name's meta is unreadable: {exc}") from exc
        return (None if info.deleted else info), msg.seq or 0

    def _check_same(self, request: SealRequest, existing: ObjectInfo) -> None:
        if existing.digest != digest_of(request.sha256) or existing.size != request.size:
            self._refuse("name_taken", request, Conflict("the name holds other content"))

    async def _verify(self, request: SealRequest) -> None:
        """The chunk subject holds exactly the claimed chunks, hashing to the claim."""
        subject = chunk_subject(self.bucket, request.nuid)
        info = await self.js.stream_info(self.stream, subjects_filter=subject)
        held = (info.state.subjects or {}).get(subject, 0)
        if held != request.chunks:
            message = f"{held} chunks uploaded, {request.chunks} claimed"
            self._refuse("chunk_count", request, BadRequest(message))
        digest, size = hashlib.sha256(), 0

        def sink(batch: list[bytes]) -> None:  # in a worker thread
            nonlocal size
            for data in batch:
                digest.update(data)
                size += len(data)

        try:
            await read_chunks(
                self.js,
                self.bucket,
                request.nuid,
                chunks=request.chunks,
                sink=sink,
                timeout=self.read_timeout_s,
                exact=True,
            )
        except (WireError, nats.errors.TimeoutError) as exc:
            self._refuse("unreadable", request, BadRequest(f"chunks unreadable: {exc}"))
        if size != request.size or digest.hexdigest() != request.sha256:
            self._refuse("mismatch", request, BadRequest("the chunks do not hash to sha256"))

    async def _duplicate(self, request: SealRequest, existing: ObjectInfo) -> SealReply:
        """Same content already named: purge the verified duplicate chunks of a node."""
        self.counts["already_stored"] += 1
        if "." in request.nuid and request.nuid != existing.nuid:
            # Read the name once more: a seal of these very chunks may have named
            # them since (after a retention delete), and named chunks are never purged.
            current, _ = await self._current(request.name)
            if current is not None and current.nuid == request.nuid:
                return _reply(request, current.nuid, sealed=False)
            subject = chunk_subject(self.bucket, request.nuid)
            await self.js.purge_stream(self.stream, subject=subject)
            self.counts["duplicates_purged"] += 1
        return _reply(request, existing.nuid, sealed=False)


def _reply(request: SealRequest, nuid: str, *, sealed: bool) -> SealReply:
    return SealReply(
        name=request.name,
        sha256=request.sha256,
        size=request.size,
        nuid=nuid,
        sealed=sealed,
    )
