"""JSON encoding and typed decoding, with one decoder made per type."""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

T = TypeVar("T")

_encoder = msgspec.json.Encoder()


def encode(obj: Any) -> bytes:
    """Encode a Struct (or builtins) as JSON bytes."""
    return _encoder.encode(obj)


_decoders: dict[Any, msgspec.json.Decoder[Any]] = {}


def decode(tp: type[T], data: bytes) -> T:
    """Decode ``data`` as ``tp``; raises msgspec.DecodeError/ValidationError on bad input."""
    dec = _decoders.get(tp)
    if dec is None:
        dec = _decoders[tp] = msgspec.json.Decoder(tp)
    result: T = dec.decode(data)
    return result


def decode_error_kind(exc: BaseException) -> str:
    """A short, stable label for why a message failed to decode (for per-kind counters)."""
    if isinstance(exc, msgspec.ValidationError):
        return "wrong_schema"
    if isinstance(exc, msgspec.DecodeError):
        return "malformed"
    return type(exc).__name__
