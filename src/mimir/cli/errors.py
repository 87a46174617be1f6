"""One table from errors to what the CLI prints and its exit code."""

from __future__ import annotations

import sys

import click
from rich.console import Console
from rich.markup import escape

from mimir.errors import MimirError

_stderr = Console(stderr=True, highlight=False)


def report(exc: BaseException) -> int:
    """Print ``exc`` for a person and return the exit code."""
    if isinstance(exc, MimirError):
        # The message is text, never markup: "pip install 'mimir-tutor[ui]'" keeps its "[ui]".
        _stderr.print(f"[bold red]error:[/] {escape(str(exc))}", markup=True, soft_wrap=True)
        return exc.exit_code
    if isinstance(exc, click.exceptions.Exit):
        return exc.exit_code
    if isinstance(exc, click.exceptions.Abort):
        _stderr.print("aborted")
        return 130
    if isinstance(exc, click.ClickException):
        exc.show(file=sys.stderr)
        return exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        _stderr.print("interrupted")
        return 130
    raise exc
