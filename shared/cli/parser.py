"""The parser class of the ``ringmaster`` CLI: argparse that keeps its tree in public.

Shell completion is generated from the parser tree (``shared/cli/completion.py``).
argparse keeps a parser's actions and subcommands only in private attributes, so this
subclass records, as they are added, each parser's long options and its subcommands.
"""

from __future__ import annotations

import argparse
from typing import Any, Protocol


class SubParsers(Protocol):
    """What ``add_subparsers`` returns, as far as the CLI uses it."""

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser: ...


class Parser(argparse.ArgumentParser):
    """An ArgumentParser recording its long options and subcommands for completion."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        #: Long options (``--name``) of this parser, its argument groups' included.
        self.long_options: list[str] = []
        #: Subcommands by name, in the order they were added.
        self.commands: dict[str, Parser] = {}
        super().__init__(*args, **kwargs)  # adds --help through add_argument

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        """``ArgumentParser.add_argument``, recording the action's long options."""
        action = super().add_argument(*args, **kwargs)
        self.note(action)
        return action

    def note(self, action: argparse.Action) -> None:
        """Record ``action``'s long options (an argument group's actions come here too)."""
        self.long_options += [s for s in action.option_strings if s.startswith("--")]

    def command(self, sub: SubParsers, name: str, **kwargs: Any) -> Parser:
        """Add subcommand ``name`` to ``sub`` (made by this parser) and record it."""
        child = sub.add_parser(name, **kwargs)
        if not isinstance(child, Parser):
            raise TypeError("subcommands need add_subparsers(parser_class=Parser)")
        self.commands[name] = child
        return child


def note_option(parser: argparse.ArgumentParser, action: argparse.Action) -> None:
    """Record an option added through an argument group of ``parser``."""
    if isinstance(parser, Parser):
        parser.note(action)
