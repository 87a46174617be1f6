"""``mimir``: the command-line edge. One command group per module under ``mimir.cli``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from mimir.cli import ask as ask_cmd
from mimir.cli import audit as audit_cmd
from mimir.cli import cache as cache_cmd
from mimir.cli import chat as chat_cmd
from mimir.cli import db as db_cmd
from mimir.cli import eval_cmd
from mimir.cli import memory as memory_cmd
from mimir.cli import models as models_cmd
from mimir.cli import pull as pull_cmd
from mimir.cli import serve as serve_cmd
from mimir.cli import sessions as sessions_cmd
from mimir.cli import users as users_cmd
from mimir.cli.context import CliState
from mimir.cli.errors import report

app = typer.Typer(
    name="mimir",
    help=(
        "Mimir: an educational AI tutor whose multi-agent LLM pipeline runs inside a memory budget.\n\n"
        "Settings come from --config / MIMIR_CONFIG (a mimir.toml), else built-in defaults that "
        "use the bundled SmolLM2-135M model. Data lives under MIMIR_HOME (default ~/.mimir)."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root(
    ctx: typer.Context,
    config: Optional[Path] = typer.Option(
        None, "--config", "-c", help="Path to mimir.toml (default: MIMIR_CONFIG, else built-in defaults)."
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at INFO level (per-step lines, loads)."),
) -> None:
    ctx.obj = CliState(config=config, verbose=verbose)


app.add_typer(models_cmd.models_app, name="models")
app.command("pull")(pull_cmd.pull)
app.command("ask")(ask_cmd.ask)
app.command("chat")(chat_cmd.chat)
app.add_typer(sessions_cmd.sessions_app, name="sessions")
app.command("eval")(eval_cmd.eval_cases)
app.add_typer(cache_cmd.cache_app, name="cache")
app.command("memory")(memory_cmd.memory)
app.command("serve")(serve_cmd.serve)
app.add_typer(users_cmd.users_app, name="users")
app.add_typer(users_cmd.keys_app, name="keys")
app.command("audit")(audit_cmd.audit)
app.add_typer(db_cmd.db_app, name="db")


def main(argv: list[str] | None = None) -> None:
    try:
        app(args=argv, standalone_mode=False)
    except BaseException as exc:  # translated through one table
        if isinstance(exc, SystemExit):
            raise
        sys.exit(report(exc))


if __name__ == "__main__":
    main()
