"""``ringmaster nodes list|drain``: nodes as the node selector sees them; drain one.

``list`` asks ``P.api.node_selector.nodes``. ``drain NODE`` finds the node agent
instance that runs NODE (every agent answers a ``health`` command with its node id)
and sends it the ``drain`` control command: it stops taking jobs, lets the running
ones finish within its grace period, hands back the rest and stops.
"""

from __future__ import annotations

import argparse
import sys

import anyio
import msgspec
from rich.table import Table

from shared.cli.client import EXIT_CODES, CliError, NoAnswer, connected, request, subjects
from shared.cli.ctl import gather
from shared.cli.loops import add_timeout
from shared.cli.tables import print_table
from shared.contracts import ControlCommand, ControlReply, Empty
from shared.errors import ConfigError
from shared.jobs import NodeList
from shared.subjects import check_token

AGENT = "node_agent"
EPILOG = EXIT_CODES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Nothing before the verb."""


def _add_list(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="the NodeList as JSON")
    add_timeout(parser)


def _add_drain(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("node", metavar="NODE", help="the node id (see `nodes list`)")
    parser.add_argument("--reason", default="ringmaster nodes drain", help="why, for the logs")
    add_timeout(parser)


def nodes_table(listing: NodeList) -> Table:
    """One row per node: liveness, slots, load, memory, GPUs, jobs."""
    title = f"nodes: {listing.alive} alive, {listing.unhealthy} unhealthy"
    table = Table(title=title, title_justify="left")
    columns = ("node", "state", "slots free", "load", "mem free", "gpus", "jobs", "version")
    for column in columns:
        table.add_column(column, overflow="fold")
    for view in sorted(listing.nodes, key=lambda v: v.info.node_id):
        info = view.info
        state = "alive" if view.alive else f"silent {view.age_s:.0f}s"
        if view.unhealthy:
            state += ", unhealthy"
        if not info.accepting:
            state += f", not accepting ({info.reason})" if info.reason else ", not accepting"
        table.add_row(
            info.node_id,
            state,
            f"{info.free_slots}/{info.slots}",
            f"{info.load_1m:.2f}",
            f"{info.memory_available_mb}/{info.memory_total_mb} MB",
            str(len(info.gpus)),
            str(len(info.running_jobs)),
            info.version,
        )
    return table


async def _list(args: argparse.Namespace) -> NodeList:
    subs = subjects(args)
    async with connected(args, "ringmaster-nodes") as nc:
        subject = subs.api("node_selector", "nodes")
        return await request(nc, subject, Empty(), NodeList, timeout=args.timeout)


def run_list(args: argparse.Namespace) -> int:
    """Print every node."""
    listing = anyio.run(_list, args)
    if args.json:
        sys.stdout.write(msgspec.json.encode(listing).decode() + "\n")
    else:
        print_table(nodes_table(listing))
    return 0


def _node_of(reply: ControlReply) -> str:
    details = reply.health.details if reply.health is not None else {}
    node = details.get("node_id")
    return node if isinstance(node, str) else ""


async def _drain(args: argparse.Namespace) -> ControlReply:
    subs = subjects(args)
    try:
        check_token(args.node, "NODE")
    except ConfigError as exc:
        raise CliError(str(exc), 2) from None
    async with connected(args, "ringmaster-nodes") as nc:
        health = ControlCommand(command="health", reason="find the node's agent")
        answers = await gather(nc, subs.ctl_all(AGENT), health, args.timeout)
        agents = [a.reply for a in answers if a.reply is not None]
        if not agents:
            raise NoAnswer(f"no node agent answered within {args.timeout:g}s")
        found = [r for r in agents if _node_of(r) == args.node]
        if not found:
            known = ", ".join(sorted(filter(None, map(_node_of, agents)))) or "none"
            raise CliError(f"no node agent runs node {args.node!r}; nodes: {known}")
        cmd = ControlCommand(command="drain", reason=args.reason)
        subject = subs.ctl(AGENT, found[0].instance)
        return await request(nc, subject, cmd, ControlReply, timeout=args.timeout)


def run_drain(args: argparse.Namespace) -> int:
    """Drain one node; 0 when its agent accepted the command."""
    reply = anyio.run(_drain, args)
    who = f"{reply.service}/{reply.instance}"
    print(f"{args.node} ({who}): {reply.message or 'draining'}, {reply.status}")
    return 0 if reply.ok else 1


def run(args: argparse.Namespace) -> int:
    """Unused: a verb is required."""
    return run_list(args)


VERB_PARSERS = {
    "list": ("every node the node selector knows", _add_list, run_list),
    "drain": ("drain one node: finish or hand back its jobs, then stop", _add_drain, run_drain),
}
