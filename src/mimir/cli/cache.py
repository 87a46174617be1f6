"""``mimir cache``: what the model cache holds, what the app still uses, and safe pruning."""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from mimir.cache import CacheReport, CleanupPlan, CleanupResult, RepoEntry, plan_cleanup, scan_cache
from mimir.cli.context import state
from mimir.errors import CacheCleanupError, InvalidInputError
from mimir.units import format_bytes

_CACHE_DIR_KEY = "mimir.cache.cache_dir"


class SortKey(str, Enum):
    size = "size"
    accessed = "accessed"
    name = "name"


cache_app = typer.Typer(
    name="cache",
    help="Show the Hugging Face model cache: sizes, which configured models use each repo, problems.",
    invoke_without_command=True,
    no_args_is_help=False,
)

_CACHE_DIR_OPTION = typer.Option(
    None,
    "--cache-dir",
    help="Hub cache to inspect (default: HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub).",
)


@cache_app.callback(invoke_without_command=True)
def cache(
    ctx: typer.Context,
    cache_dir: Optional[Path] = _CACHE_DIR_OPTION,
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON (sizes in bytes)."),
    sort: SortKey = typer.Option(SortKey.size, "--sort", help="Order repos by size, last access or name."),
) -> None:
    """List cached repos by size with the configured models that use them, totals and warnings."""
    ctx.meta[_CACHE_DIR_KEY] = cache_dir
    if ctx.invoked_subcommand is not None:
        return
    settings = state(ctx).app().settings
    report = scan_cache(cache_dir, settings)
    repos = sort_repos(report.repos, sort)
    if as_json:
        payload = report.to_dict()
        order = {r.repo_path: i for i, r in enumerate(repos)}
        payload["repos"].sort(key=lambda d: order[Path(d["repo_path"])])
        typer.echo(json.dumps(payload, indent=2))
        return
    print_report(Console(), report, repos)


@cache_app.command("prune")
def prune(
    ctx: typer.Context,
    unreferenced: bool = typer.Option(False, "--unreferenced", help="Whole repos no configured model uses."),
    old_revisions: bool = typer.Option(
        False, "--old-revisions", help="Revisions no branch, tag or configured model points at."
    ),
    incomplete: bool = typer.Option(False, "--incomplete", help="Partial files of interrupted downloads."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only show what would go (the default)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Delete without asking."),
    cache_dir: Optional[Path] = _CACHE_DIR_OPTION,
    as_json: bool = typer.Option(False, "--json", help="Print the plan (and the result) as JSON."),
) -> None:
    """Free disk: plan what goes, then delete it with --yes (dry run by default).

    Revisions a configured model pins are always kept; nothing outside the cache directory is
    ever deleted. In a terminal, without --yes or --dry-run, asks before deleting.
    "Unreferenced" means unused by this Mimir configuration: other programs sharing the cache
    may still use those repos.
    """
    if dry_run and yes:
        raise InvalidInputError("--dry-run and --yes contradict each other; pass one of them")
    if not (unreferenced or old_revisions or incomplete):
        raise InvalidInputError("choose what to prune: --unreferenced, --old-revisions and/or --incomplete")
    cache_dir = cache_dir or ctx.meta.get(_CACHE_DIR_KEY)
    settings = state(ctx).app().settings
    report = scan_cache(cache_dir, settings)
    plan = plan_cleanup(report, unreferenced=unreferenced, old_revisions=old_revisions, incomplete=incomplete)
    console = Console()
    execute = yes
    if not as_json:
        print_plan(console, plan)
        if not plan.is_empty and not yes and not dry_run and sys.stdin.isatty():
            execute = typer.confirm(f"Delete these and free {plan.expected_freed_str}?", default=False)
    if plan.is_empty:
        execute = False
    result = plan.execute() if execute else None
    if result is not None:
        from mimir.storage.audit import cli_actor

        state(ctx).app().audit.record(cli_actor(), "cache.prune", str(report.cache_dir), result.summary())
    if as_json:
        typer.echo(
            json.dumps(
                {"plan": plan.to_dict(), "executed": result is not None, "result": result.to_dict() if result else None},
                indent=2,
            )
        )
    elif result is None:
        if not plan.is_empty:
            console.print("Dry run: nothing was deleted. Run again with --yes to delete.")
    else:
        print_result(console, result)
    if result is not None and result.failed:
        raise CacheCleanupError([str(f.path) for f in result.failed], result.freed_bytes)


# -- rendering -----------------------------------------------------------------------------


def sort_repos(repos: tuple[RepoEntry, ...], key: SortKey | str) -> list[RepoEntry]:
    key = SortKey(key)
    if key is SortKey.accessed:
        return sorted(repos, key=lambda r: (-r.last_accessed_epoch_s, r.cache_id))
    if key is SortKey.name:
        return sorted(repos, key=lambda r: r.cache_id.lower())
    return sorted(repos, key=lambda r: (-r.size_on_disk_bytes, r.cache_id))


def _used_by(repo: RepoEntry) -> str:
    if not repo.referenced:
        return "[yellow]unreferenced[/]"
    return "; ".join(ref.describe() for ref in repo.referenced_by)


def print_report(console: Console, report: CacheReport, repos: list[RepoEntry]) -> None:
    if not report.exists:
        console.print(f"No Hugging Face cache at {report.cache_dir} (nothing downloaded yet).")
    elif repos:
        table = Table(title=f"Hugging Face cache: {report.cache_dir}")
        table.add_column("repo", overflow="fold", ratio=3)
        table.add_column("size", justify="right", no_wrap=True)
        table.add_column("files", justify="right", no_wrap=True)
        table.add_column("revs", justify="right", no_wrap=True)
        table.add_column("refs", overflow="fold")
        table.add_column("accessed", overflow="fold")
        table.add_column("used by", overflow="fold", min_width=12, ratio=3)
        for repo in repos:
            table.add_row(
                repo.cache_id,
                repo.size_on_disk_str,
                str(repo.files_count),
                str(repo.revisions_count),
                ", ".join(sorted(repo.refs)) or "-",
                repo.last_accessed_str,
                _used_by(repo),
            )
        console.print(table)
    else:
        console.print(f"The Hugging Face cache at {report.cache_dir} holds no repos.")
    if report.exists:
        referenced = report.referenced_repos
        console.print(
            f"{report.repos_count} repo(s), {report.size_on_disk_str} on disk: "
            f"{len(referenced)} referenced ({format_bytes(sum(r.size_on_disk_bytes for r in referenced))}), "
            f"{len(report.unreferenced_repos)} unreferenced ({report.unreferenced_size_str})"
            + (f", incomplete downloads {format_bytes(report.incomplete_size_bytes)}" if report.incomplete_size_bytes else "")
            + (f", unreadable {format_bytes(report.corrupted_size_bytes)}" if report.corrupted_size_bytes else "")
            + "."
        )
    if report.local_files:
        table = Table(title="Configured model files outside the cache")
        for col in ("model", "roles", "source", "path", "size"):
            table.add_column(col, overflow="fold", justify="right" if col == "size" else "left")
        for f in report.local_files:
            table.add_row(f.model_id, ", ".join(f.roles) or "-", f.kind, str(f.path), f.size_str)
        console.print(table)
    if report.missing:
        table = Table(title="Configured models missing from disk")
        for col in ("model", "roles", "source", "reason"):
            table.add_column(col, overflow="fold")
        for m in report.missing:
            table.add_row(m.model_id, ", ".join(m.roles) or "-", m.source, m.reason)
        console.print(table)
    if report.warnings:
        table = Table(title=f"Warnings ({len(report.warnings)})")
        for col in ("kind", "path", "size", "detail"):
            table.add_column(col, overflow="fold", justify="right" if col == "size" else "left")
        for w in report.warnings:
            detail = w.message + (f" -> {w.target}" if w.target else "")
            table.add_row(w.kind, str(w.path), w.size_str, detail)
        console.print(table)
    if report.unreferenced_repos:
        console.print(
            f"To free {report.unreferenced_size_str}: mimir cache prune --unreferenced (a dry run; add --yes to delete)."
        )


def print_plan(console: Console, plan: CleanupPlan) -> None:
    if plan.is_empty:
        console.print("Nothing to delete.")
    else:
        table = Table(title=f"Cleanup plan for {plan.cache_dir}")
        for col in ("what", "item", "reason", "size"):
            table.add_column(col, overflow="fold", justify="right" if col == "size" else "left")
        for repo in plan.repos:
            table.add_row("repo", f"{repo.repo_type}/{repo.repo_id}", repo.reason, repo.size_str)
        for rev in plan.revisions:
            table.add_row(
                "revision",
                f"{rev.repo_type}/{rev.repo_id}@{rev.commit_hash[:8]} ({len(rev.blobs)} blob(s))",
                rev.reason,
                rev.size_str,
            )
        for f in plan.files:
            table.add_row("file", str(f.path), f.reason, format_bytes(f.size_bytes))
        for payload in plan.shared_payloads:
            if payload.size_bytes:
                table.add_row("shared blob", str(payload.path), "no repo links to it any more", format_bytes(payload.size_bytes))
        console.print(table)
        console.print(f"Would free {plan.expected_freed_str}.")
    for skipped in plan.refused:
        target = f" -> {skipped.target}" if skipped.target else ""
        console.print(f"[red]refused[/] {skipped.path}{target}: {skipped.reason}")


def print_result(console: Console, result: CleanupResult) -> None:
    console.print(
        f"Freed {result.freed_str} ({result.freed_bytes} bytes; planned {result.expected_freed_bytes} bytes), "
        f"{len(result.deleted)} path(s) deleted."
    )
    for skipped in result.kept:
        console.print(f"[yellow]kept[/] {skipped.path}: {skipped.reason}")
    for skipped in result.refused:
        console.print(f"[red]refused[/] {skipped.path}: {skipped.reason}")
    for failed in result.failed:
        console.print(f"[red]failed[/] {failed.path}: {failed.error}")
