"""``ringmaster service NAME [ARGS...]``: one service in the foreground.

This is the container entrypoint. The service is found by name at run time
(``services.<NAME>.__main__``) and its ``main`` gets every argument after the name,
so ``ringmaster service loop_manager --help`` shows that service's own options.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import pkgutil
from collections.abc import Callable, Sequence
from typing import cast

from shared.cli.client import CliError

EPILOG = "Arguments after NAME go to the service (try: ringmaster service NAME --help)."

SERVICES_PACKAGE = "services"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """NAME and everything after it, untouched."""
    parser.add_argument("name", metavar="NAME", help="the service, a package under services/")
    parser.add_argument(
        "args", metavar="ARGS", nargs=argparse.REMAINDER, help="the service's own arguments"
    )


def known_services() -> list[str]:
    """Packages under ``services`` that can be run (they have a ``__main__``)."""
    try:
        package = importlib.import_module(SERVICES_PACKAGE)
    except ImportError:
        return []
    names = []
    for info in pkgutil.iter_modules(package.__path__):
        if info.ispkg and _has_main(info.name):
            names.append(info.name)
    return sorted(names)


def _has_main(name: str) -> bool:
    try:
        return importlib.util.find_spec(f"{SERVICES_PACKAGE}.{name}.__main__") is not None
    except ImportError:
        # A package that fails while being located is broken, not runnable.
        return False


def service_main(name: str) -> Callable[[Sequence[str] | None], int]:
    """The ``main`` of ``services.<name>.__main__``; CliError (exit 2) for an unknown name."""
    known = known_services()
    if name not in known:
        listed = ", ".join(known) or "none found"
        raise CliError(f"unknown service {name!r}; known services: {listed}", 2)
    try:
        module = importlib.import_module(f"{SERVICES_PACKAGE}.{name}.__main__")
    except ImportError as exc:  # a broken package: say which import failed, in one line
        raise CliError(f"cannot load services.{name}: {type(exc).__name__}: {exc}", 1) from None
    entry = getattr(module, "main", None)
    if not callable(entry):
        raise CliError(f"services.{name}.__main__ has no main(argv) function", 2)
    return cast(Callable[[Sequence[str] | None], int], entry)


def run(args: argparse.Namespace) -> int:
    """Run the service until it stops; its exit code."""
    entry = service_main(args.name)
    return int(entry(list(args.args)) or 0)
