"""``ringmaster nats-config``: nats-server users and permissions for one cluster.

Writes ``OUT/auth.conf`` (an ``accounts`` block that ``deploy/nats/*.conf`` include)
and one user file per service kind in ``SECRETS`` (``<kind>.user``, mode 0600),
generating only the passwords that are missing: running it again with the same
secrets writes the same config. ``--explain`` prints the permission table instead.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from shared.cli.client import CliError
from shared.denials import markdown
from shared.errors import ConfigError
from shared.natsconf import DEFAULT_COST, load_or_make_users, render
from shared.node_permissions import NodeSpec, parse_nodes
from shared.permissions import KINDS, rules_for
from shared.subjects import DEFAULT_PREFIX, Subjects

EPILOG = """examples:
  ringmaster nats-config --out deploy/nats --secrets deploy/secrets
  ringmaster nats-config --nodes gpu1:cpu+gpu+train,cpu1 --tls --out deploy/nats
  ringmaster nats-config --explain            # what each service kind may do, and why
  ringmaster nats-config --denials            # the denial table of docs/operations.md

Each service then connects with --credentials-file SECRETS/<kind>.user
(RINGMASTER_<SERVICE>_CREDENTIALS_FILE); a node agent with SECRETS/node-<id>.user;
the CLI with SECRETS/operator.user ($RINGMASTER_CREDENTIALS_FILE)."""


def _cost(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 4 <= value <= 16:
        raise argparse.ArgumentTypeError(f"{text!r} is not between 4 and 16")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Prefix, output and secrets directories, bcrypt cost, ``--explain``."""
    parser.add_argument("--prefix", default=DEFAULT_PREFIX, help="cluster prefix")
    parser.add_argument(
        "--out", metavar="DIR", type=Path, default=Path("."), help="where auth.conf goes"
    )
    parser.add_argument(
        "--secrets",
        metavar="DIR",
        type=Path,
        default=Path("secrets"),
        help="one user file per service kind, kept if present (default: ./secrets)",
    )
    parser.add_argument(
        "--cost",
        metavar="N",
        type=_cost,
        default=DEFAULT_COST,
        help=f"bcrypt cost, 4..16 (default: {DEFAULT_COST}); every connect pays it once",
    )
    parser.add_argument(
        "--nodes",
        metavar="ID[:CAP+CAP],...",
        default="",
        help="one user per node, serving the given capability pools (default: cpu)",
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        help="also make a private CA, server and client certificates in OUT/tls",
    )
    parser.add_argument(
        "--explain", action="store_true", help="print the permission table (Markdown) and exit"
    )
    parser.add_argument(
        "--denials", action="store_true", help="print the denial table (Markdown) and exit"
    )


def _nodes(text: str) -> tuple[NodeSpec, ...]:
    # Parsed here, not by argparse: any token is a valid node id, so a bad entry is
    # told apart only by its content, and the message names the entry at fault.
    try:
        return tuple(parse_nodes(text))
    except ConfigError as exc:
        raise CliError(str(exc), 2) from None


def explain(subjects: Subjects) -> str:
    """Every rule of every service kind as a Markdown table."""
    lines = ["| kind | may | subject | why |", "|---|---|---|---|"]
    for kind in KINDS:
        for rule in rules_for(subjects, kind):
            lines.append(f"| {kind} | {rule.action} | `{rule.subject}` | {rule.why} |")
    lines.append("| operator | publish, subscribe | `>` | people and the CLI: everything |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Write the config and the missing secrets (or print the table); 0 on success."""
    try:
        subjects = Subjects(args.prefix)
    except ConfigError as exc:
        raise CliError(str(exc), 2) from None
    if args.explain:
        print(explain(subjects))
        return 0
    if args.denials:
        print(markdown(Subjects()))  # the doc's table, always for the default prefix
        return 0
    nodes = _nodes(args.nodes)
    try:
        users = load_or_make_users(subjects, args.secrets, nodes)
        rendered = render(subjects, users, args.cost, nodes)
        args.out.mkdir(parents=True, exist_ok=True)
        target = args.out / "auth.conf"
        target.write_text(rendered.config, encoding="utf-8")
        if args.tls:
            from shared.tlsgen import make_tls

            tls_dir = args.out / "tls"
            made = make_tls(tls_dir, [n.node_id for n in nodes])
            print(f"TLS files in {tls_dir}/: {', '.join(made) or 'all present, kept'}")
    except (OSError, ConfigError) as exc:
        raise CliError(str(exc), 1) from None
    print(f"wrote {target} ({len(users)} users); user files in {args.secrets}/")
    return 0
