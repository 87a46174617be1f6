"""``mimir pull REPO``: download a model from the Hugging Face Hub, estimate it, configure it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from mimir.cli.context import state
from mimir.config import load_settings, resolve_config_path, settings_from_dict
from mimir.units import format_bytes


def _settings(config: Path | None):
    """The settings the budget comes from: the named file when it exists, else defaults."""
    if config is not None and config.exists():
        return load_settings(config)
    return settings_from_dict({})


def pull(
    ctx: typer.Context,
    repo: str = typer.Argument(..., help="Hub repo id, e.g. Qwen/Qwen2.5-1.5B-Instruct-GGUF."),
    file: Optional[str] = typer.Option(None, "--file", "-f", help="The GGUF file to take (default: the only one, or the single Q4_K_M)."),
    revision: str = typer.Option("main", "--revision", "-r", help="Branch, tag or commit."),
    model_id: Optional[str] = typer.Option(None, "--as", help="Model id in the config (default: from the repo name)."),
    roles: list[str] = typer.Option([], "--role", help="Give this role to the model (repeat for several)."),
    context_length: int = typer.Option(2048, "--context", min=64, help="Context length to configure and estimate for."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show the files, sizes and estimate; download nothing."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of text."),
) -> None:
    """Download a GGUF or transformers model into the Hugging Face cache, say whether it fits
    the memory budget, and add it (and --role) to the config file named by --config."""
    from mimir.ops.pull import describe_estimate, execute_pull, model_entry_toml, plan_pull, write_model_config

    config = resolve_config_path(state(ctx).config)
    settings = _settings(config)
    console = Console(stderr=as_json, highlight=False, markup=False)
    plan = plan_pull(repo, filename=file, revision=revision, model_id=model_id, roles=roles,
                     context_length=context_length)
    console.print(f"{plan.repo.repo_id}@{plan.repo.revision} (commit {plan.repo.commit[:12]}): {plan.kind} model, "
                  f"id '{plan.model_id}'")
    for f in plan.files:
        console.print(f"  {f.path}  {format_bytes(f.size_bytes)}")
    console.print(f"to download: {format_bytes(plan.download_bytes)} of {format_bytes(plan.total_bytes)}")
    budget = settings.budget
    before = plan.estimate_before
    if before is not None:
        verdict = "fits" if before.total_bytes <= budget.ram_bytes else "does NOT fit"
        console.print(f"estimate at {context_length} tokens: {describe_estimate(before)}; "
                      f"{verdict} the {format_bytes(budget.ram_bytes)} RAM budget")
    else:
        console.print("estimate: read from the file's metadata once downloaded")
    if dry_run:
        if as_json:
            typer.echo(json.dumps(_plan_json(plan, before, budget.ram_bytes), indent=2))
        return
    result = execute_pull(plan, budget)
    verdict = "fits" if result.fits else "does NOT fit"
    console.print(f"downloaded to {result.local_path}")
    console.print(f"estimate at {context_length} tokens: {describe_estimate(result.estimate)}; {verdict} the "
                  f"{format_bytes(result.budget_bytes)} {result.device} budget")
    written = None
    if config is not None:
        write_model_config(config, plan)
        written = str(config)
        roles_note = f" with role(s) {', '.join(plan.roles)}" if plan.roles else ""
        console.print(f"wrote [models.{plan.model_id}]{roles_note} to {config}")
    else:
        console.print("not written to a config file (name one with --config or MIMIR_CONFIG); the entry:")
        console.print(model_entry_toml(plan))
    if as_json:
        payload = _plan_json(plan, result.estimate, result.budget_bytes)
        payload.update({"local_path": str(result.local_path), "downloaded": list(result.downloaded),
                        "config_written": written, "device": result.device})
        typer.echo(json.dumps(payload, indent=2))


def _plan_json(plan, estimate, budget_bytes: int) -> dict:
    return {
        "repo": plan.repo.repo_id, "revision": plan.repo.revision, "commit": plan.repo.commit, "kind": plan.kind,
        "model_id": plan.model_id, "roles": list(plan.roles), "context_length": plan.context_length,
        "files": [{"path": f.path, "size_bytes": f.size_bytes, "sha256": f.sha256} for f in plan.files],
        "download_bytes": plan.download_bytes,
        "estimate_bytes": estimate.total_bytes if estimate else None,
        "budget_bytes": budget_bytes,
        "fits": (estimate.total_bytes <= budget_bytes) if estimate else None,
    }
