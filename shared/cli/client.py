"""What every ``ringmaster`` subcommand shares: its options, its errors, its NATS calls.

Every failure a user can cause or meet (NATS unreachable, nobody answering, a bad
value) becomes a :class:`CliError` carrying its exit code; ``main`` prints it as one
line, ``ringmaster <cmd>: error: ...``, never a traceback. The codes are the same for
every subcommand (``probe`` keeps Kubernetes' two: 0 alive, 1 not):

- 0 it worked;
- 1 the thing failed (an error answer, a job that failed, nothing found);
- 2 usage: bad arguments, caught before anything is sent;
- 3 the cluster cannot be reached: NATS is unreachable, or no instance of the
  service that must answer is there.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import msgspec
import nats.errors
from nats.aio.client import Client

from shared.bus import BusStats, connect
from shared.cli.parser import note_option
from shared.codec import decode, encode
from shared.contracts import ErrorReply
from shared.credentials import TlsFiles
from shared.errors import BusError, ConfigError
from shared.subjects import DEFAULT_PREFIX, Subjects

T = TypeVar("T")

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
CREDENTIALS_ENV = "RINGMASTER_CREDENTIALS_FILE"
ERROR_CODE_HEADER = "Nats-Service-Error-Code"


EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3

#: The exit codes as ``--help`` shows them (every subcommand's epilog ends with it).
EXIT_CODES = """exit codes:
  0  ok
  1  the thing failed (an error answer, a failed job, nothing found)
  2  usage: bad arguments
  3  cannot reach the cluster (NATS, or the service that must answer)"""


class CliError(Exception):
    """A failure shown as one line on stderr, with the exit code it maps to."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class NoAnswer(CliError):
    """Nobody answered a request: no responders, or no reply within the timeout."""

    def __init__(self, message: str, code: int = EXIT_UNREACHABLE) -> None:
        super().__init__(message, code)


def add_common_options(parser: argparse.ArgumentParser, *, inherited: bool = False) -> None:
    """``--nats-url``, ``--prefix`` and ``--connect-timeout``, for commands that use NATS.

    ``inherited``: the parser is a verb under a command that has them too; its unset
    options must not overwrite what was given before the verb, so they have no default.
    """
    group = parser.add_argument_group("NATS")

    def default(value: object) -> object:
        return argparse.SUPPRESS if inherited else value

    def option(*flags: str, **kwargs: Any) -> None:
        note_option(parser, group.add_argument(*flags, **kwargs))

    option(
        "--nats-url",
        metavar="URL",
        default=default(None),
        help=f"NATS server(s), comma-separated (default: $NATS_URL or {DEFAULT_NATS_URL})",
    )
    option(
        "--prefix",
        default=default(None),
        help=f"cluster prefix (default: $RINGMASTER_PREFIX or {DEFAULT_PREFIX})",
    )
    option(
        "--credentials-file",
        metavar="FILE",
        default=default(None),
        help="NATS credentials (.creds, nkey seed or user file; default: "
        "$RINGMASTER_CREDENTIALS_FILE); TLS files come from $RINGMASTER_TLS_CA_FILE, "
        "$RINGMASTER_TLS_CERT_FILE and $RINGMASTER_TLS_KEY_FILE",
    )
    option(
        "--connect-timeout",
        metavar="S",
        type=positive_float,
        default=default(3.0),
        help="seconds to reach NATS before giving up (default: 3)",
    )


def positive_float(text: str) -> float:
    """An argparse type: a number greater than zero."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be greater than 0")
    return value


def non_negative_int(text: str) -> int:
    """An argparse type: a whole number of zero or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more")
    return value


def nats_url(args: argparse.Namespace) -> str:
    """The NATS URL: ``--nats-url``, else ``$NATS_URL``, else the local default."""
    explicit: str | None = args.nats_url
    return explicit or os.environ.get("NATS_URL") or DEFAULT_NATS_URL


def subjects(args: argparse.Namespace, fallback: str = DEFAULT_PREFIX) -> Subjects:
    """Subjects for ``--prefix``, else ``$RINGMASTER_PREFIX``, else ``fallback``."""
    explicit: str | None = args.prefix
    prefix = explicit or os.environ.get("RINGMASTER_PREFIX") or fallback
    try:
        return Subjects(prefix)
    except ConfigError as exc:
        raise CliError(str(exc), 2) from None


@asynccontextmanager
async def connected(
    args: argparse.Namespace, name: str, *, code: int = EXIT_UNREACHABLE
) -> AsyncIterator[Client]:
    """A NATS connection for one command; unreachable NATS is a CliError with ``code``."""
    url = nats_url(args)
    stats = BusStats()
    env = os.environ
    credentials = getattr(args, "credentials_file", None) or env.get(CREDENTIALS_ENV, "")
    tls = TlsFiles(*(env.get(f"RINGMASTER_TLS_{part}_FILE", "") for part in ("CA", "CERT", "KEY")))
    try:
        nc = await connect(
            url,
            name=name,
            connect_timeout=args.connect_timeout,
            stats=stats,
            credentials_file=credentials,
            tls=tls,
        )
    except (BusError, ConfigError) as exc:
        raise CliError(str(exc), code) from None
    try:
        yield nc
    finally:
        # Leaving on purpose is not a disconnect to warn about; and a command that ends
        # (or is interrupted) has nothing in flight worth a drain.
        stats.connected = False
        await nc.close()


async def request(
    nc: Client,
    subject: str,
    payload: msgspec.Struct,
    reply_type: type[T],
    *,
    timeout: float,
) -> T:
    """One request/reply; raises NoAnswer, or CliError for an error reply or a bad one."""
    try:
        msg = await nc.request(subject, encode(payload), timeout=timeout)
    except nats.errors.NoRespondersError:
        raise NoAnswer(f"nobody answers on {subject}") from None
    except nats.errors.TimeoutError:
        raise NoAnswer(f"no reply on {subject} within {timeout:g}s") from None
    code = (msg.headers or {}).get(ERROR_CODE_HEADER)
    if code is not None:
        raise CliError(f"{subject} answered error {code}: {error_message(msg.data)}")
    try:
        return decode(reply_type, msg.data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise CliError(f"{subject} answered something unreadable: {exc}") from None


def error_message(data: bytes) -> str:
    """The message of an error reply, or the start of a reply that is not one."""
    try:
        return decode(ErrorReply, data).error.message
    except (msgspec.DecodeError, msgspec.ValidationError):
        return data[:200].decode("utf-8", errors="replace")


def short(value: Any, limit: int = 60) -> str:
    """``value`` as text of at most ``limit`` characters, for one-line displays."""
    text = value if isinstance(value, str) else msgspec.json.encode(value).decode()
    return text if len(text) <= limit else text[: limit - 1] + "…"
