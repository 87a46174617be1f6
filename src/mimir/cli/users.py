"""``mimir users`` and ``mimir keys``: accounts for ``[server] auth = "password"``.

Run on the server machine (whoever can run them can read the database anyway). Every change
is written to the audit log (``mimir audit``) as ``cli:<os user>``.
"""

from __future__ import annotations

import json
import sys
import time

import typer
from rich.console import Console
from rich.table import Table

from mimir.cli.context import state
from mimir.errors import InvalidInputError

users_app = typer.Typer(help="Add, list, change and remove users (for [server] auth = \"password\").",
                        no_args_is_help=True)
keys_app = typer.Typer(help="Create, list and revoke API keys (Authorization: Bearer KEY on /v1).",
                       no_args_is_help=True)


def _when(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


def read_password(from_stdin: bool, *, what: str = "Password") -> str:
    """The new password: one line of stdin with ``--password-stdin``, else asked twice when
    stdin is a terminal. Never an argument (it would show in ``ps`` and shell history)."""
    if from_stdin:
        line = sys.stdin.readline()
        return line[:-1] if line.endswith("\n") else line
    if not sys.stdin.isatty():
        raise InvalidInputError("stdin is not a terminal: pass the password on stdin with --password-stdin")
    return typer.prompt(what, hide_input=True, confirmation_prompt=True)


def _audit(ctx: typer.Context, action: str, target: str, **detail) -> None:
    from mimir.storage.audit import cli_actor

    state(ctx).app().audit.record(cli_actor(), action, target, detail)


@users_app.command("add")
def add_user(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="User name: letters, digits and . _ - @ (at most 64)."),
    role: str = typer.Option("student", "--role", "-r", help="student, teacher or admin."),
    password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the password from stdin (one line)."),
) -> None:
    """Add a user. The password is asked for (twice), or read from stdin with --password-stdin."""
    from mimir.auth.credentials import check_name
    from mimir.storage.accounts import check_role

    check_name(name)
    check_role(role)
    user = state(ctx).app().accounts.add_user(name, role, read_password(password_stdin))
    _audit(ctx, "user.add", user.name, role=user.role)
    typer.echo(f"added {user.role} '{user.name}'")


@users_app.command("list")
def list_users(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Users with their roles."""
    users = state(ctx).app().accounts.list_users()
    if as_json:
        typer.echo(json.dumps([{"name": u.name, "role": u.role, "created_at": u.created_at,
                                "updated_at": u.updated_at} for u in users], indent=2))
        return
    table = Table(title="Users")
    for col in ("name", "role", "created", "password changed"):
        table.add_column(col)
    for u in users:
        table.add_row(u.name, u.role, _when(u.created_at), _when(u.updated_at))
    Console().print(table)


@users_app.command("passwd")
def change_password(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="User whose password to change."),
    password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the password from stdin (one line)."),
) -> None:
    """Set a new password; the user's web sign-ins end (their API keys stay)."""
    accounts = state(ctx).app().accounts
    accounts.get_user(name)
    user = accounts.set_password(name, read_password(password_stdin, what="New password"))
    _audit(ctx, "user.passwd", user.name)
    typer.echo(f"changed the password of '{user.name}'")


@users_app.command("remove")
def remove_user(ctx: typer.Context, name: str = typer.Argument(..., help="User to remove.")) -> None:
    """Remove a user with their API keys and sign-ins (their sessions stay). The last admin stays."""
    user = state(ctx).app().accounts.remove_user(name)
    _audit(ctx, "user.remove", user.name, role=user.role)
    typer.echo(f"removed {user.role} '{user.name}'")


@keys_app.command("create")
def create_key(ctx: typer.Context, name: str = typer.Argument(..., help="User the key acts for.")) -> None:
    """Print a new API key for user NAME, once, as one line (only its digest is stored)."""
    info, key = state(ctx).app().accounts.create_key(name)
    _audit(ctx, "key.create", info.id, user=info.user_name)
    typer.echo(key)


@keys_app.command("list")
def list_keys(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """API keys: id, user, created, revoked (the keys themselves are not stored)."""
    keys = state(ctx).app().accounts.list_keys()
    if as_json:
        typer.echo(json.dumps([{"id": k.id, "user": k.user_name, "created_at": k.created_at,
                                "revoked_at": k.revoked_at, "active": k.active} for k in keys], indent=2))
        return
    table = Table(title="API keys")
    for col in ("id", "user", "created", "revoked"):
        table.add_column(col)
    for k in keys:
        table.add_row(k.id, k.user_name, _when(k.created_at), _when(k.revoked_at))
    Console().print(table)


@keys_app.command("revoke")
def revoke_key(ctx: typer.Context, key_id: str = typer.Argument(..., help="Key id (see `mimir keys list`).")) -> None:
    """Revoke an API key: requests with it get 401 from now on."""
    info = state(ctx).app().accounts.revoke_key(key_id)
    _audit(ctx, "key.revoke", info.id, user=info.user_name)
    typer.echo(f"revoked key {info.id} of '{info.user_name}'")
