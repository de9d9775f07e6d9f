"""The ``ringmaster`` command line: run, watch and extend a cluster.

::

    ringmaster up [--cluster FILE] [--no-live]    the whole cluster until Ctrl-C
    ringmaster service NAME [ARGS...]             one service in the foreground
    ringmaster status [--json]                    the orchestrator's view; exit 0 if all is well
    ringmaster watch [--service S] [--failed]     events (and beacons) as they happen
    ringmaster probe NAME [--readiness]           liveness/readiness exit codes for Kubernetes
    ringmaster ctl NAME VERB [--instance I]       pause|resume|drain|stop|reload|health
    ringmaster new-service NAME                   the skeleton of a new manager and its tests
    ringmaster nats-server                        the embedded nats-server alone
    ringmaster nats-config [--out D] [--secrets D] nats-server users and permissions
    ringmaster submit [--wait] -- CMD ARGS...     run a job on the cluster
    ringmaster jobs [--state S]                   list jobs
    ringmaster cancel JOB_ID                      cancel a job
    ringmaster state export|import FILE           back up or restore all KV state
    ringmaster models                             the Elo table of every config
    ringmaster --version                          the package version
    ringmaster logs SERVICE [--instance I] [--tail N] [-f] [--level L]
    ringmaster logs --job ID [--attempt N]        a job attempt's stdout and stderr
    ringmaster jobs inspect|retry JOB_ID          one job's full record; submit it again
    ringmaster loops list|pause|resume|trigger    the loop manager's housekeeping loops
    ringmaster scheduler priorities|override      the selfplay scheduler's weights
    ringmaster nodes list|drain NODE              nodes as the selector sees them; drain one
    ringmaster watch --since 10m                  events from the P_EVENTS history, then live
    ringmaster completion bash|zsh                a shell completion script

Exit codes are the same everywhere (``shared/cli/client.py``): 0 ok, 1 the thing
failed, 2 usage, 3 cannot reach the cluster.

Each subcommand lives in its own module with ``add_arguments(parser)`` and
``run(args) -> int``. Services are imported by name at run time only
(``services.<name>.__main__``): ``shared`` never depends on ``services``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from types import ModuleType

import shared
from shared.cli import (
    completion,
    ctl,
    jobs,
    logs,
    loops,
    models,
    nats_config,
    nats_server,
    nodes,
    probe,
    scaffold,
    scheduler,
    service,
    state,
    status,
    up,
    watch,
)
from shared.cli.client import EXIT_CODES, CliError, add_common_options
from shared.cli.parser import Parser, SubParsers

__all__ = ["build_parser", "main"]

PROG = "ringmaster"

# name -> (module, one-line help, whether it talks to NATS through the common options)
COMMANDS: dict[str, tuple[ModuleType, str, bool]] = {
    "up": (up, "run the cluster of a cluster file until Ctrl-C", False),
    "service": (service, "run one service in the foreground (container entrypoint)", False),
    "status": (status, "show the cluster as the orchestrator sees it", True),
    "watch": (watch, "print events (and beacons) as they happen", True),
    "probe": (probe, "liveness or readiness of a service, as an exit code", True),
    "ctl": (ctl, "pause, resume, drain, stop, reload or health-check a service", True),
    "new-service": (scaffold, "write the skeleton of a new service and its tests", False),
    "nats-server": (nats_server, "run the embedded nats-server alone", False),
    "nats-config": (nats_config, "write nats-server users and permissions, one per service", False),
    "submit": (jobs, "submit a job (for shell jobs: the command after --)", True),
    "jobs": (jobs, "list jobs, newest first", True),
    "cancel": (jobs, "cancel a job", True),
    "state": (state, "export or import all KV state (backup and restore)", True),
    "models": (models, "each config's champions and their Elo", True),
    "logs": (logs, "a service's log records, or a job attempt's stdout and stderr", True),
    "loops": (loops, "list, pause, resume or trigger the loop manager's loops", True),
    "scheduler": (scheduler, "the selfplay scheduler's priorities and overrides", True),
    "nodes": (nodes, "list nodes as the node selector sees them; drain one", True),
    "completion": (completion, "print a bash or zsh completion script", False),
}

# Commands that share a module name their own entry points.
_ENTRY = {
    "submit": ("add_submit_arguments", "run_submit"),
    "jobs": ("add_jobs_arguments", "run_jobs"),
    "cancel": ("add_cancel_arguments", "run_cancel"),
}

#: Where a command's verbs are, when its module is shared with other commands.
_VERB_TABLE = {"jobs": "JOB_VERBS", "submit": "", "cancel": ""}
#: Commands whose verbs are optional (``ringmaster jobs`` alone lists jobs).
_OPTIONAL_VERBS = {"jobs"}

RunFn = Callable[[argparse.Namespace], int]


def build_parser() -> Parser:
    """The parser of every subcommand; each sets ``args.run`` to its entry point."""
    parser = Parser(
        prog=PROG,
        description="Control plane for self-play training clusters, on NATS.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {shared.__version__}")
    sub = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=Parser
    )
    for name, (module, help_text, uses_nats) in COMMANDS.items():
        child = _add_parser(parser, sub, name, help_text, getattr(module, "EPILOG", None))
        add_name, run_name = _ENTRY.get(name, ("add_arguments", "run"))
        getattr(module, add_name)(child)
        if uses_nats:
            add_common_options(child)
        run: RunFn = getattr(module, run_name)
        child.set_defaults(run=run)
        verbs: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], RunFn]] = getattr(
            module, _VERB_TABLE.get(name, "VERB_PARSERS"), {}
        )
        if verbs:
            inner = child.add_subparsers(
                dest="verb",
                metavar="VERB",
                required=name not in _OPTIONAL_VERBS,
                parser_class=Parser,
            )
            for verb, (verb_help, add, verb_run) in verbs.items():
                leaf = _add_parser(child, inner, verb, verb_help, getattr(module, "EPILOG", None))
                add(leaf)
                add_common_options(leaf, inherited=True)
                leaf.set_defaults(run=verb_run)
        # ``completion`` prints a script generated from this very tree.
        child.set_defaults(root_parser=parser)
    return parser


def _add_parser(
    parent: Parser, sub: SubParsers, name: str, help_text: str, epilog: str | None
) -> Parser:
    return parent.command(
        sub,
        name,
        help=help_text,
        description=help_text,
        # Every command's help ends with the exit codes, the same for all of them.
        epilog=epilog or EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``ringmaster`` with ``argv`` (default: the process's arguments); the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # usage errors (2) and --help (0) from argparse
        return _exit_code(exc)
    try:
        code: int = args.run(args)
    except CliError as exc:
        print(f"{PROG} {args.command}: error: {exc.message}", file=sys.stderr)
        return exc.code
    except SystemExit as exc:  # a service's own config parser, inside `ringmaster service`
        return _exit_code(exc)
    except KeyboardInterrupt:
        # A Ctrl-C that arrived before a command installed its own handling.
        return 130
    return code


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr)
    return 1
