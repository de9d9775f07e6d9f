"""``ringmaster new-service NAME``: the skeleton of a new manager and its tests.

Writes ``services/NAME/`` (``__init__``, ``__main__``, ``config``, ``service``,
``policy``) and two tests from the ``*.tmpl`` files in ``shared/cli/templates``. The
result is a small working service (a ``ping`` endpoint and a sample pure policy)
whose tests pass as written and which ruff and ``mypy --strict`` accept; started, the
orchestrator discovers it through its beacons and ``$SRV.PING``.
"""

from __future__ import annotations

import argparse
import keyword
import re
from importlib import resources
from pathlib import Path
from string import Template

from shared.cli.client import CliError

# snake_case: lower-case words of letters and digits joined by single underscores.
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9]*(?:_[a-z0-9]+)*$")
# Long enough for any manager's name, short enough that generated lines stay under 100.
MAX_NAME_LENGTH = 28

#: template file -> where it goes, relative to the project root
FILES = {
    "init.py.tmpl": "services/{name}/__init__.py",
    "main.py.tmpl": "services/{name}/__main__.py",
    "config.py.tmpl": "services/{name}/config.py",
    "service.py.tmpl": "services/{name}/service.py",
    "policy.py.tmpl": "services/{name}/policy.py",
    "test_policy.py.tmpl": "tests/unit/test_{name}_policy.py",
    "test_integration.py.tmpl": "tests/integration/test_{name}.py",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """NAME and ``--dir``."""
    parser.add_argument("name", metavar="NAME", help="the service's name, in snake_case")
    parser.add_argument(
        "--dir",
        metavar="ROOT",
        type=Path,
        default=Path("."),
        help="the project root, which holds services/ (default: the current directory)",
    )


def check_name(name: str) -> None:
    """Raise CliError (exit 2) unless ``name`` can be a service package and subject token."""
    if not NAME_PATTERN.match(name):
        raise CliError(
            f"invalid service name {name!r}: use snake_case, lower-case letters and digits "
            "joined by single underscores, starting with a letter (such as demo_widget)",
            2,
        )
    if keyword.iskeyword(name) or keyword.issoftkeyword(name):
        raise CliError(f"invalid service name {name!r}: it is a Python keyword", 2)
    if len(name) > MAX_NAME_LENGTH:
        raise CliError(
            f"invalid service name {name!r}: longer than {MAX_NAME_LENGTH} characters", 2
        )


def class_name(name: str) -> str:
    """``demo_widget`` -> ``DemoWidget``."""
    return "".join(part.capitalize() for part in name.split("_"))


def render(name: str) -> dict[str, str]:
    """Every generated file's text, keyed by its path relative to the project root."""
    values = {
        "name": name,
        "NAME": name.upper(),
        "cls": class_name(name),
        "description": f"the {name.replace('_', ' ')} service",
    }
    templates = resources.files("shared.cli.templates")
    return {
        target.format(name=name): Template(
            templates.joinpath(source).read_text("utf-8")
        ).substitute(values)
        for source, target in FILES.items()
    }


def plan(root: Path, name: str) -> dict[Path, str]:
    """The files to write under ``root``; CliError (exit 2) if any would be overwritten."""
    check_name(name)
    if not (root / "services").is_dir():
        raise CliError(
            f"{root} has no services/ directory: run this in the project root or pass --dir", 2
        )
    if (root / "services" / name).exists():
        raise CliError(f"services/{name} already exists in {root}", 2)
    files = {root / path: text for path, text in render(name).items()}
    taken = [str(path) for path in files if path.exists()]
    if taken:
        raise CliError(f"would overwrite {', '.join(taken)}", 2)
    return files


def write(files: dict[Path, str]) -> None:
    """Write ``files``; on failure remove what was written, so nothing half-made stays."""
    written: list[Path] = []
    try:
        for path, text in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("x", encoding="utf-8") as f:  # "x": never overwrite
                written.append(path)
                f.write(text)
    except OSError as exc:
        for path in written:
            path.unlink(missing_ok=True)
        raise CliError(f"cannot write {exc.filename or 'a file'}: {exc.strerror or exc}") from None


def next_steps(name: str, root: Path) -> str:
    """What to do after generating, printed by the command."""
    tests = f"tests/unit/test_{name}_policy.py tests/integration/test_{name}.py"
    return f"""
next steps:
  1. make it yours: services/{name}/policy.py holds its decisions (pure functions),
     services/{name}/service.py its endpoints, subscriptions and loops (in setup()),
     services/{name}/config.py its settings.
  2. run its tests:  .venv/bin/pytest -q {tests}
  3. run it alone:   ringmaster service {name}   (with a nats-server running)
  4. have `ringmaster up` run it: add to {root / "ringmaster.toml"}
       [services.{name}]
       restart = "permanent"
     the orchestrator then starts and supervises it, and sees it within one beacon."""


def run(args: argparse.Namespace) -> int:
    """Generate the service and print what was written and what to do next."""
    root: Path = args.dir
    files = plan(root, args.name)
    write(files)
    for path in files:
        print(f"created {path}")
    print(next_steps(args.name, root))
    return 0
