"""The building blocks of ``shared/permissions.py``: a rule, and JetStream API rules.

JetStream is used through request subjects under ``$JS.API``; these rules name each
stream explicitly, so a user reaches only the streams its kind uses, at the level
it needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Action = Literal["publish", "subscribe"]
Level = Literal["provision", "read", "admin"]


@dataclass(frozen=True)
class Rule:
    """One allowed publish or subscribe, and why the kind needs it."""

    action: Action
    subject: str
    why: str


def js_rules(stream: str, level: Level) -> list[Rule]:
    """JetStream API subjects for one stream at one level.

    provision: look the stream up and create it when missing (every ``ensure_*``);
    read: also get messages and run consumers on it (KV get and watch, object get,
    durable pull consumers) and acknowledge what they deliver;
    admin: also update, purge and delete the stream and delete messages.
    """
    api = "$JS.API"
    rules = [
        Rule("publish", f"{api}.STREAM.INFO.{stream}", "look up the stream it uses"),
        Rule("publish", f"{api}.STREAM.CREATE.{stream}", "create the stream when missing"),
    ]
    if level in ("read", "admin"):
        why = "read messages and run consumers"
        rules += [
            Rule("publish", f"{api}.DIRECT.GET.{stream}", why),
            Rule("publish", f"{api}.DIRECT.GET.{stream}.>", why),
            Rule("publish", f"{api}.STREAM.MSG.GET.{stream}", why),
            Rule("publish", f"{api}.CONSUMER.CREATE.{stream}", why),
            Rule("publish", f"{api}.CONSUMER.CREATE.{stream}.>", why),
            Rule("publish", f"{api}.CONSUMER.DURABLE.CREATE.{stream}.*", why),
            Rule("publish", f"{api}.CONSUMER.INFO.{stream}.*", why),
            Rule("publish", f"{api}.CONSUMER.DELETE.{stream}.*", why),
            Rule("publish", f"{api}.CONSUMER.MSG.NEXT.{stream}.*", why),
            Rule("publish", f"$JS.ACK.{stream}.>", "acknowledge what its consumers deliver"),
            # nats-py finds the stream of a subject it subscribes to (an object's
            # chunks) by asking for stream names: it reveals names, nothing else.
            Rule("publish", f"{api}.STREAM.NAMES", "find the stream of a subscription"),
        ]
    if level == "admin":
        why = "own the stream: update, purge, delete, remove messages"
        rules += [
            Rule("publish", f"{api}.STREAM.*.{stream}", why),
            Rule("publish", f"{api}.STREAM.MSG.DELETE.{stream}", why),
            Rule("publish", f"{api}.CONSUMER.*.{stream}", why),
        ]
    return rules


def unique_rules(rules: list[Rule]) -> list[Rule]:
    """``rules`` without repeats of one (action, subject), first occurrence kept."""
    seen: set[tuple[str, str]] = set()
    unique = []
    for rule in rules:
        if (rule.action, rule.subject) not in seen:
            seen.add((rule.action, rule.subject))
            unique.append(rule)
    return unique
