"""``ringmaster ctl NAME VERB``: send a control command to one instance or all of a kind.

The verbs are those every instance answers (``shared/control.py``): pause, resume,
drain, stop, health and reload. With ``--instance`` the command goes to that instance;
without it, to ``P.ctl.<NAME>.all``, and every instance that answers within the
timeout is listed, one line each. Under the generated NATS permissions only the
operator's credentials may publish control commands.
"""

from __future__ import annotations

import argparse
import typing

import anyio
import msgspec
from nats.aio.client import Client

from shared.cli.client import (
    ERROR_CODE_HEADER,
    CliError,
    NoAnswer,
    connected,
    error_message,
    positive_float,
    request,
    subjects,
)
from shared.codec import decode, encode
from shared.contracts import ControlCommand, ControlReply, ControlVerb
from shared.errors import ConfigError
from shared.subjects import check_token

VERBS: tuple[str, ...] = typing.get_args(ControlVerb)

#: The status header nats-server sends to a request no subscriber will see.
NO_RESPONDERS = ("Status", "503")

EPILOG = """exit codes:
  0  every instance that answered carried the command out (at least one answered)
  1  an instance refused the command
  2  bad arguments
  3  cannot reach NATS, or no instance answered"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """NAME, VERB, ``--instance``, ``--reason`` and ``--timeout``."""
    parser.add_argument("name", metavar="NAME", help="the service kind, e.g. selfplay_scheduler")
    parser.add_argument("verb", metavar="VERB", choices=VERBS, help=" | ".join(VERBS))
    parser.add_argument("--instance", metavar="I", help="one instance (default: every instance)")
    parser.add_argument("--reason", default="", help="why, for the logs and events")
    parser.add_argument(
        "--timeout",
        metavar="S",
        type=positive_float,
        default=2.0,
        help="seconds to wait for answers (default: 2)",
    )


class Answer(msgspec.Struct, frozen=True):
    """One instance's answer: its reply, or the error it gave."""

    reply: ControlReply | None
    error: str = ""


async def gather(nc: Client, subject: str, cmd: ControlCommand, timeout: float) -> list[Answer]:
    # A request to ``.all`` has as many answers as instances: collect them on one inbox
    # until the timeout, instead of taking the first as nc.request would.
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox, max_msgs=0)
    answers: list[Answer] = []
    try:
        await nc.publish(subject, encode(cmd), reply=inbox)
        await nc.flush()
        with anyio.move_on_after(timeout):
            async for msg in sub.messages:
                headers = msg.headers or {}
                if headers.get(NO_RESPONDERS[0]) == NO_RESPONDERS[1] and not msg.data:
                    break  # the server's word that nobody listens on the subject
                if headers.get(ERROR_CODE_HEADER) is not None:
                    answers.append(Answer(None, error_message(msg.data)))
                    continue
                try:
                    answers.append(Answer(decode(ControlReply, msg.data)))
                except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                    answers.append(Answer(None, f"unreadable answer: {exc}"))
    finally:
        await sub.unsubscribe()
    return answers


async def send(args: argparse.Namespace) -> list[Answer]:
    """Send the command; the answers, one per instance that replied."""
    subs = subjects(args)
    try:
        check_token(args.name, "service name")
        if args.instance is not None:
            check_token(args.instance, "instance")
    except ConfigError as exc:
        raise CliError(str(exc), 2) from None
    cmd = ControlCommand(command=args.verb, reason=args.reason or "ringmaster ctl")
    async with connected(args, "ringmaster-ctl") as nc:
        if args.instance is not None:
            subject = subs.ctl(args.name, args.instance)
            return [Answer(await request(nc, subject, cmd, ControlReply, timeout=args.timeout))]
        return await gather(nc, subs.ctl_all(args.name), cmd, args.timeout)


def run(args: argparse.Namespace) -> int:
    """Print one line per answering instance; 0 when all of them did it."""
    answers = anyio.run(send, args)
    if not answers:
        raise NoAnswer(f"no instance of {args.name} answered within {args.timeout:g}s")
    refused = 0
    for answer in answers:
        if answer.reply is None:
            refused += 1
            print(f"{args.name}: refused: {answer.error}")
            continue
        reply = answer.reply
        print(f"{reply.service}/{reply.instance}: {reply.message or reply.command}, {reply.status}")
    return 1 if refused else 0
