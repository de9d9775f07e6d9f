"""Byte-stable ``.npz`` files and content ids.

numpy's ``savez`` stamps each member with the current time, so the same content
would give a different file (and a different blob sha256) on every write. Here the
members are written in name order with a fixed timestamp: a retried job that
computes the same thing writes the same bytes, and the content-addressed store keeps
one blob. Reading never unpickles (``allow_pickle=False``) and turns every way a
file can be bad into one ``FormatError`` with a one-line message.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

#: The zip epoch: the earliest timestamp a zip member can carry.
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)

Arrays = Mapping[str, NDArray[Any]]


class FormatError(Exception):
    """A file that is missing, unreadable, or not what it claims to be."""


def content_id(arrays: Arrays, *, length: int = 16) -> str:
    """A hex prefix of the sha256 over the arrays' names, dtypes, shapes and bytes."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        value = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}|{value.dtype.str}|{value.shape}|".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()[:length]


def write_npz(path: Path, arrays: Arrays) -> None:
    """Write the arrays as a compressed ``.npz``, byte for byte the same for equal content."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in sorted(arrays):
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asanyarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, member.getvalue())
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(buffer.getvalue())
    # Rename last, so a reader never sees half a file under the real name.
    tmp.replace(path)


def read_npz(path: Path, required: Mapping[str, str] | None = None) -> dict[str, NDArray[Any]]:
    """All arrays of an ``.npz``; ``required`` maps names to dtype kinds (``"i"``, ``"U"``...).

    Raises FormatError for a missing or corrupt file, a missing array or a wrong kind.
    """
    if not path.is_file():
        raise FormatError(f"{path.name}: no such file")
    if not zipfile.is_zipfile(path):
        raise FormatError(f"{path.name}: not an .npz file (no zip archive)")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise FormatError(f"{path.name}: not a readable .npz ({exc})") from None
    for name, kind in (required or {}).items():
        if name not in arrays:
            raise FormatError(f"{path.name}: missing array {name!r}")
        if arrays[name].dtype.kind not in kind:
            raise FormatError(f"{path.name}: array {name!r} has dtype {arrays[name].dtype}")
    return arrays


def scalar_str(arrays: Arrays, name: str, path: Path) -> str:
    """A 0-d string array's value (config names, model kinds, ids)."""
    value = arrays[name]
    if value.shape != () or value.dtype.kind != "U":
        raise FormatError(f"{path.name}: {name!r} is not a string")
    return str(value)
