"""``python -m chaos``: a training run under faults, then the bad-input suite.

::

    python -m chaos [--kills N] [--seed S] [--interval SECONDS] [--cluster]
                    [--job-managers N] [--bad-input N] [--workdir DIR] [--aimed ...]

The seed is printed at the start; the same seed replays the same choices of victims.
Exit 0 only when every invariant held (and every bad-input check passed).
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Sequence
from pathlib import Path

from chaos import badinput, runner


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, not {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The options of ``python -m chaos``."""
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=100, help="kill -9 count (default: 100)")
    parser.add_argument("--seed", type=int, default=None, help="replay a run (default: random)")
    parser.add_argument(
        "--interval", type=_positive, default=6.0, help="mean seconds between kills (default: 6)"
    )
    parser.add_argument(
        "--cluster", action="store_true", help="3 clustered nats-servers, one killed and revived"
    )
    parser.add_argument(
        "--bad-input",
        type=int,
        default=10_000,
        metavar="N",
        help="bad messages per subject after the run (0: skip; default: 10000)",
    )
    parser.add_argument("--workdir", type=Path, default=None, help="where data and logs go")
    parser.add_argument(
        "--aimed",
        action="store_true",
        help="all of: --failpoints --hang-every 5 --stall (single server) --ledger --partition "
        "--supervisors --startup-every 7, and --after 300",
    )
    parser.add_argument("--failpoints", action="store_true", help="arm every failpoint once")
    parser.add_argument(
        "--hang-every", type=int, default=0, metavar="K", help="every K-th fault a SIGSTOP hang"
    )
    parser.add_argument("--stall", action="store_true", help="stall nats-server (SIGSTOP) once")
    parser.add_argument("--ledger", action="store_true", help="the harness's own jobs")
    parser.add_argument(
        "--partition",
        action="store_true",
        help="NATS servers and a node agent on hosts of their own (root only); cut off",
    )
    parser.add_argument(
        "--after",
        type=float,
        default=None,
        metavar="SECONDS",
        help="after the faults, start a fresh game and wait this long for a promotion",
    )
    parser.add_argument(
        "--supervisors", action="store_true", help="kill -9 the orchestrator, then ringmaster up"
    )
    parser.add_argument(
        "--job-managers",
        type=int,
        default=1,
        metavar="N",
        help="job manager instances sharing the jobs (default: 1)",
    )
    parser.add_argument(
        "--startup-every",
        type=int,
        default=0,
        metavar="K",
        help="every K-th victim killed again while starting",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chaos run, then the bad-input suite; 0 when everything held."""
    args = build_parser().parse_args(argv)
    if args.kills < 0 or args.bad_input < 0:
        print("python -m chaos: error: --kills and --bad-input must be >= 0", file=sys.stderr)
        return 2
    if not 1 <= args.job_managers <= 64:
        print("python -m chaos: error: --job-managers must be 1 to 64", file=sys.stderr)
        return 2
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31)
    options = runner.Options(
        kills=args.kills,
        seed=seed,
        interval_s=args.interval,
        cluster=args.cluster,
        workdir=args.workdir,
        failpoints=args.failpoints or args.aimed,
        hang_every=args.hang_every or (5 if args.aimed else 0),
        stall=(args.stall or args.aimed) and not args.cluster,
        ledger=args.ledger or args.aimed,
        partition=args.partition or args.aimed,
        supervisors=args.supervisors or args.aimed,
        startup_every=args.startup_every or (7 if args.aimed else 0),
        after_s=args.after if args.after is not None else (300.0 if args.aimed else 0.0),
        job_managers=args.job_managers,
    )
    code = runner.main(options)
    if args.bad_input:
        code = max(code, badinput.main(args.bad_input, seed))
    return code


if __name__ == "__main__":
    sys.exit(main())
