"""Clients of an :class:`~shared.testing.cluster.AuthServer` under one user's credentials.

The permission tests connect as a service kind, a node or the operator and watch for
the server's "permissions violation" errors, which nats-py reports only through the
connection's error callback: :func:`connect_as` collects them and :func:`violated`
reads them.
"""

from __future__ import annotations

import nats
import nats.errors
from nats.aio.client import Client

from shared.credentials import TlsFiles, credential_options, tls_options
from shared.testing.cluster import AuthServer


async def connect_as(
    auth: AuthServer, who: str, errors: list[Exception], *, tls: bool = False
) -> Client:
    """A client with ``who``'s user file (a kind, ``node-<id>`` or ``operator``); the
    server's asynchronous errors are appended to ``errors``. With ``tls`` it presents
    the node's certificate (``node-<id>``) or the shared client certificate."""

    async def error_cb(exc: Exception) -> None:
        errors.append(exc)

    options = credential_options(auth.user_file(who))
    if tls:
        files = auth.tls_files(who if who.startswith("node-") else "client")
        pem = TlsFiles(files["tls_ca_file"], files["tls_cert_file"], files["tls_key_file"])
        options.update(tls_options(pem))
    return await nats.connect(
        auth.url, error_cb=error_cb, connect_timeout=5, max_reconnect_attempts=0, **options
    )


def violated(errors: list[Exception]) -> bool:
    """Whether the server reported a permissions violation."""
    return any("permissions violation" in str(e).lower() for e in errors)
