"""Sealing an upload: a node's chunks become a named blob only through a trusted writer.

A node agent with its own NATS user may publish chunks (``$O.<bucket>.C.<node>.<nuid>``)
but not meta messages, so it can neither delete nor overwrite a blob. After its chunks
are acknowledged it asks the sync planner (``P.api.sync_planner.seal``) to name them:
the planner checks that the name is free or already holds the same content, reads the
chunks back, checks their sha256 and size, and writes the meta message itself.
"""

from __future__ import annotations

import re
from typing import Annotated

import msgspec
from nats.aio.client import Client

from shared.codec import decode, encode
from shared.contracts import ErrorReply
from shared.errors import RingmasterError
from shared.intake import ERROR_CODE_HEADER

SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
#: A chunk namespace and a NUID: ``<node id>.<nuid>`` (tokens of letters, digits, ``_-``).
NUID = re.compile(r"^[A-Za-z0-9_-]{1,64}(\.[A-Za-z0-9_-]{1,64})?$")
#: The most chunks one sealed blob may have (64 GiB at 512 KiB chunks).
MAX_CHUNKS = 1 << 17


class SealRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Name the chunks on ``$O.<bucket>.C.<nuid>`` as blob ``name`` (its sha256)."""

    name: str
    sha256: str
    size: Annotated[int, msgspec.Meta(ge=0)]
    nuid: str
    chunks: Annotated[int, msgspec.Meta(ge=0, le=MAX_CHUNKS)]
    chunk_size: Annotated[int, msgspec.Meta(ge=1, le=1 << 20)]


class SealReply(msgspec.Struct, kw_only=True):
    """The blob as stored; ``sealed`` is false when the same content was already there."""

    name: str
    sha256: str
    size: int
    nuid: str
    sealed: bool


class SealRefused(RingmasterError):
    """The trusted writer refused to name the chunks (``code`` as HTTP)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"seal refused ({code}): {message}")
        self.code = code


def problem(request: SealRequest, max_chunk_size: int) -> str | None:
    """What is wrong with a request on its face, or None (the chunks are checked later)."""
    if not SHA256_HEX.match(request.sha256):
        return "sha256 must be 64 lowercase hex digits"
    if request.name != request.sha256:
        return "a blob's name is its sha256"
    if not NUID.match(request.nuid):
        return "nuid must be one or two tokens of letters, digits, '_' or '-'"
    if request.chunk_size > max_chunk_size:
        return f"chunk_size above {max_chunk_size}"
    # Every chunk but the last is full: the size fixes the count.
    if request.chunks != -(-request.size // request.chunk_size):
        return f"{request.chunks} chunks cannot hold {request.size} bytes"
    return None


class SealClient:
    """Asks the sync planner to seal uploads (the node agent's side)."""

    def __init__(self, nc: Client, subject: str, timeout: float) -> None:
        self.nc = nc
        self.subject = subject
        self.timeout = timeout

    async def __call__(self, request: SealRequest) -> SealReply:
        """Seal, or raise SealRefused (an answer) or a nats error (no answer)."""
        reply = await self.nc.request(self.subject, encode(request), timeout=self.timeout)
        code = (reply.headers or {}).get(ERROR_CODE_HEADER)
        if code is not None:
            try:
                message = decode(ErrorReply, reply.data).error.message
            except (msgspec.DecodeError, msgspec.ValidationError):
                message = repr(reply.data[:200])
            raise SealRefused(int(code), message)
        return decode(SealReply, reply.data)
