"""Bad payloads for one intake type: random bytes, wrong schemas, empty, over-size, replays.

``wrong_schema`` draws JSON with hypothesis: any JSON value, and objects that use the
type's own field names with values of the wrong type, kept only when the type's
decoder refuses them (``is_valid`` applies the intake's rules). ``minimal_valid``
builds the smallest message the type accepts, to be replayed.
"""

from __future__ import annotations

import enum
import random
import re
from typing import Any

import msgspec
import msgspec.inspect as mi
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from shared.codec import decode
from shared.events import REGISTRY, build_event

#: Every string field of a replayed message, and every wildcard token of a subject.
TOKEN = "badinput"

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=8,
)


def is_valid(tp: type[Any], payload: bytes, max_bytes: int) -> bool:
    """Whether the intake would hand ``payload`` to its handler (its own rules)."""
    if len(payload) > max_bytes:
        return False
    try:
        decode(tp, payload or b"{}")  # the intake reads an empty message as {}
    except (msgspec.DecodeError, msgspec.ValidationError):
        return False
    return True


def field_names(tp: type[Any]) -> list[str]:
    """The JSON names of a Struct's fields (none for other types)."""
    info = mi.type_info(tp)
    if isinstance(info, mi.StructType):
        return [f.encode_name for f in info.fields]
    return []


def wrong_schema(tp: type[Any], count: int, seed: int, max_bytes: int) -> list[bytes]:
    """Up to ``count`` JSON messages ``tp`` refuses, drawn by hypothesis from ``seed``."""
    names = field_names(tp) or ["x"]
    known_keys = st.dictionaries(st.sampled_from(names), JSON, min_size=1, max_size=len(names))
    strategy = (
        st.one_of(JSON, known_keys)
        .map(msgspec.json.encode)
        .filter(lambda b: not is_valid(tp, b, max_bytes))
    )
    found: list[bytes] = []

    @settings(
        max_examples=count,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @hypothesis_seed(seed)
    @given(strategy)
    def collect(payload: bytes) -> None:
        found.append(payload)

    collect()
    return found[:count]


def random_bytes(rng: random.Random, tp: type[Any], max_bytes: int) -> bytes:
    """Random bytes (1 to 256 of them) that ``tp`` refuses."""
    while True:
        data = rng.randbytes(rng.randint(1, 256))
        if not is_valid(tp, data, max_bytes):
            return data


def oversized(rng: random.Random, max_bytes: int) -> bytes:
    """A JSON-looking message just over the size limit."""
    return b'{"x": "' + b"a" * (max_bytes + rng.randint(1, 2048)) + b'"}'


def _minimal(info: mi.Type) -> Any:
    """The smallest value of a type that its constraints accept."""
    if isinstance(info, mi.StructType):
        # Optional strings are filled too: an idempotency key makes a replay a replay.
        return {
            f.encode_name: _minimal(f.type)
            for f in info.fields
            if f.required or isinstance(f.type, mi.StrType)
        }
    if isinstance(info, mi.StrType):
        for text in (TOKEN, "0" * 64, "a"):
            if info.pattern is None or re.search(info.pattern, text):
                return text
        return TOKEN
    if isinstance(info, (mi.IntType, mi.FloatType)):
        low = info.ge if info.ge is not None else (info.gt + 1 if info.gt is not None else 1)
        return low
    if isinstance(info, mi.BoolType):
        return False
    if isinstance(info, mi.LiteralType):
        return info.values[0]
    if isinstance(info, mi.EnumType):
        member: enum.Enum = next(iter(info.cls))
        return member.value
    if isinstance(info, mi.UnionType):
        return _minimal(info.types[0])
    if isinstance(info, (mi.ListType, mi.SetType, mi.FrozenSetType, mi.VarTupleType)):
        return []
    if isinstance(info, mi.DictType):
        return {}
    return None


def minimal_valid(tp: type[Any], max_bytes: int) -> bytes | None:
    """The smallest message ``tp`` accepts (None when this cannot build one)."""
    payload = msgspec.json.encode(_minimal(mi.type_info(tp)))
    return payload if is_valid(tp, payload, max_bytes) else None


def minimal_event(subject: str, prefix: str) -> bytes | None:
    """A valid event for an event subject ``P.event.<service>.<noun>.<phase>``.

    Its data is the smallest payload of the event type the subject names, so a
    consumer takes it in as that event (None for a subject that names no known type).
    """
    tokens = subject.split(".")
    if len(tokens) != 5:
        return None
    data_type = REGISTRY.get(f"{tokens[3]}_{tokens[4]}".upper())
    if data_type is None:
        return None
    data = msgspec.json.decode(minimal_valid(data_type, 1 << 30) or b"null")
    if data is None:
        return None
    event = build_event(prefix, TOKEN, TOKEN, 1, msgspec.convert(data, data_type))
    return msgspec.json.encode(event)
