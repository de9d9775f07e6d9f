"""The seal request's own checks and the node agent's choice of upload mode (pure)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from services.node_agent.workspace import seals_uploads
from shared.blob_seal import SealRequest, problem
from shared.blob_wire import STORE_CHUNK, chunk_subject, digest_of, meta_subject
from shared.credentials import UserFile, write_user_file
from shared.subjects import Subjects

SHA = hashlib.sha256(b"games").hexdigest()


def request(**changes: object) -> SealRequest:
    fields: dict[str, object] = {
        "name": SHA,
        "sha256": SHA,
        "size": 2 * STORE_CHUNK + 1,
        "nuid": "node-1.Sb2cRwnXoYd4G1bPYpJo3N",
        "chunks": 3,
        "chunk_size": STORE_CHUNK,
    }
    return SealRequest(**{**fields, **changes})  # type: ignore[arg-type]


def test_a_well_formed_request_passes() -> None:
    assert problem(request(), STORE_CHUNK) is None
    assert problem(request(size=0, chunks=0), STORE_CHUNK) is None


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"sha256": "ABC"}, "64 lowercase hex"),
        ({"name": "0" * 64}, "name is its sha256"),
        ({"nuid": "a.b.c"}, "nuid"),
        ({"nuid": "a.>"}, "nuid"),
        ({"nuid": ""}, "nuid"),
        ({"chunk_size": 2 * STORE_CHUNK}, "chunk_size above"),
        ({"chunks": 2}, "cannot hold"),
        ({"chunks": 4}, "cannot hold"),
    ],
)
def test_a_request_wrong_on_its_face_is_named(changes: dict[str, object], words: str) -> None:
    found = problem(request(**changes), STORE_CHUNK)
    assert found is not None and words in found


def test_the_wire_layout_is_the_object_stores() -> None:
    assert chunk_subject("rm_data", "a.N") == "$O.rm_data.C.a.N"
    assert meta_subject("rm_data", "x") == "$O.rm_data.M.eA=="
    assert digest_of(hashlib.sha256(b"").hexdigest()) == (
        "SHA-256=47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU="
    )


def test_auto_seals_only_under_the_nodes_own_user(tmp_path: Path) -> None:
    s = Subjects("rm")
    own, kind = tmp_path / "own.user", tmp_path / "kind.user"
    write_user_file(own, UserFile(s.user("node-n1"), "pw"))
    write_user_file(kind, UserFile(s.user("node_agent"), "pw"))
    assert seals_uploads("auto", str(own), s, "n1")
    assert not seals_uploads("auto", str(own), s, "n2")  # another node's file
    assert not seals_uploads("auto", str(kind), s, "n1")
    assert not seals_uploads("auto", "", s, "n1")
    assert seals_uploads("seal", "", s, "n1") and not seals_uploads("direct", str(own), s, "n1")
