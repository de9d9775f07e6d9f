"""What a node agent hands a job: args, an inputs and an outputs directory, stdout.

``RINGMASTER_JOB_ARGS`` is a JSON object; inputs are files in
``RINGMASTER_INPUTS_DIR``; outputs and ``result.json`` go to
``RINGMASTER_OUTPUTS_DIR``. Stdout carries only progress lines
(``{"progress": x}``): the agent counts any other line as invalid.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.training import MNK_GAMES

RESULT_FILE = "result.json"


class ArgsError(Exception):
    """The job's arguments or environment are unusable."""


@dataclass(frozen=True)
class JobEnv:
    """What the node agent hands a job."""

    args: dict[str, Any]
    inputs: Path
    outputs: Path

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> JobEnv:
        """Read the job's variables (ArgsError names the one missing or malformed)."""
        env = os.environ if environ is None else environ
        try:
            args = json.loads(env.get("RINGMASTER_JOB_ARGS", "{}") or "{}")
        except ValueError as exc:
            raise ArgsError(f"RINGMASTER_JOB_ARGS is not JSON: {exc}") from None
        if not isinstance(args, dict):
            raise ArgsError("RINGMASTER_JOB_ARGS must be a JSON object")
        dirs = []
        for name in ("RINGMASTER_INPUTS_DIR", "RINGMASTER_OUTPUTS_DIR"):
            if not env.get(name):
                raise ArgsError(f"{name} is not set")
            dirs.append(Path(env[name]))
        dirs[1].mkdir(parents=True, exist_ok=True)
        return cls(args, dirs[0], dirs[1])

    def config(self) -> str:
        """The game config named in the args."""
        name = self.args.get("game")
        if name not in MNK_GAMES:
            raise ArgsError(f"args.game must be one of {sorted(MNK_GAMES)}, not {name!r}")
        return str(name)

    def number(self, name: str, default: float, low: float, high: float, kind: type = int) -> Any:
        """A numeric arg within [low, high] (ints must be whole numbers)."""
        value = self.args.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ArgsError(f"args.{name} must be a number, not {value!r}")
        if kind is int and value != int(value):
            raise ArgsError(f"args.{name} must be a whole number, not {value!r}")
        if not low <= value <= high:
            raise ArgsError(f"args.{name} must be in [{low}, {high}], not {value!r}")
        return kind(value)

    def flag(self, name: str, default: bool) -> bool:
        """A true/false arg."""
        value = self.args.get(name, default)
        if not isinstance(value, bool):
            raise ArgsError(f"args.{name} must be true or false, not {value!r}")
        return value

    def write_result(self, result: dict[str, Any]) -> None:
        """Write ``result.json`` (renamed into place: never seen half-written)."""
        tmp = self.outputs / (RESULT_FILE + ".tmp")
        tmp.write_text(json.dumps(result, sort_keys=True) + "\n", encoding="utf-8")
        tmp.replace(self.outputs / RESULT_FILE)


def emit_progress(value: float) -> None:
    """One progress line on stdout, flushed at once."""
    sys.stdout.write(json.dumps({"progress": round(min(1.0, max(0.0, value)), 4)}) + "\n")
    sys.stdout.flush()


def every_tenth(total: int, report: Callable[[float], None]) -> Callable[[int], None]:
    """A callback for ``done`` of ``total`` items that reports about every 10%."""
    step = max(1, total // 10)
    return lambda done: report(done / total) if done % step == 0 or done == total else None
