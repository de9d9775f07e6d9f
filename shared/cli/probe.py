"""``ringmaster probe NAME``: liveness or readiness of a service, as an exit code.

Meant for Kubernetes ``exec`` probes. Liveness asks the instance (or, without
``--instance``, any instance: the first reply wins) for its health over its control
subject: an answer within the timeout means the process and its event loop work.
Readiness also needs that answer to say RUNNING or DEGRADED, the states in which
the service takes work.

With ``--metrics`` (which needs ``--instance``) the probe asks the instance's
``metrics`` endpoint instead: control commands are the operator's alone under the
generated NATS permissions, and a container probes itself with its own service's
credentials, which may call the metrics endpoints.
"""

from __future__ import annotations

import argparse

import anyio

from shared.cli.client import CliError, connected, positive_float, request, subjects
from shared.contracts import ControlCommand, ControlReply, Empty, ServiceMetrics, ServiceStatus
from shared.errors import ConfigError
from shared.subjects import check_token

EPILOG = """exit codes:
  0  alive (liveness), or alive and RUNNING or DEGRADED (--readiness)
  1  no answer within the timeout, an error answer, or not ready"""

READY = (ServiceStatus.RUNNING, ServiceStatus.DEGRADED)


class ProbeFailed(CliError):
    """NATS was reached, but no good answer came: the probe's negative result."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """NAME, ``--instance``, ``--readiness`` and ``--timeout``."""
    parser.add_argument("name", metavar="NAME", help="the service to probe")
    parser.add_argument("--instance", metavar="I", help="one instance (default: any)")
    parser.add_argument(
        "--readiness",
        action="store_true",
        help="also require status RUNNING or DEGRADED",
    )
    parser.add_argument(
        "--timeout",
        metavar="S",
        type=positive_float,
        default=2.0,
        help="seconds to wait for the answer (default: 2)",
    )
    parser.add_argument(
        "--metrics",
        action="store_true",
        help="ask the instance's metrics endpoint, not its control subject (needs --instance)",
    )


async def ask_health(args: argparse.Namespace) -> ControlReply:
    """Send a ``health`` control command and return the first reply."""
    subs = subjects(args)
    try:
        check_token(args.name, "service name")
        if args.instance is not None:
            check_token(args.instance, "instance")
    except ConfigError as exc:
        raise CliError(str(exc), 2) from None
    if args.metrics:
        if args.instance is None:
            raise CliError("--metrics needs --instance", 2)
        return await _ask_metrics(args)
    subject = subs.ctl(args.name, args.instance) if args.instance else subs.ctl_all(args.name)
    async with connected(args, "ringmaster-probe", code=1) as nc:
        try:
            return await request(
                nc,
                subject,
                ControlCommand(command="health", reason="probe"),
                ControlReply,
                timeout=args.timeout,
            )
        except CliError as exc:  # no answer, or an error answer (such as "stopping")
            raise ProbeFailed(exc.message) from None


async def _ask_metrics(args: argparse.Namespace) -> ControlReply:
    subject = subjects(args).instance_api(args.name, args.instance, "metrics")
    async with connected(args, "ringmaster-probe", code=1) as nc:
        try:
            metrics = await request(nc, subject, Empty(), ServiceMetrics, timeout=args.timeout)
        except CliError as exc:
            raise ProbeFailed(exc.message) from None
    # The same shape as a health reply, so run() judges both alike.
    return ControlReply(
        service=metrics.service,
        instance=metrics.instance,
        command="health",
        ok=True,
        status=metrics.status,
    )


def run(args: argparse.Namespace) -> int:
    """Print one line; 0 when alive (and ready, with ``--readiness``), else 1."""
    target = f"{args.name}/{args.instance}" if args.instance else args.name
    try:
        reply = anyio.run(ask_health, args)
    except ProbeFailed as exc:
        print(f"{target}: not alive: {exc.message}")
        return 1
    who = f"{reply.service}/{reply.instance}"
    detail = f" ({reply.message})" if reply.message else ""
    if not args.readiness:
        print(f"{who}: alive, {reply.status}{detail}")
        return 0
    if reply.status in READY:
        print(f"{who}: ready, {reply.status}{detail}")
        return 0
    print(f"{who}: not ready, {reply.status}{detail}")
    return 1
