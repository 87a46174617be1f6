"""The Models tab's pull action: plan (dry run), then download with progress, for admins.

The same steps as ``mimir pull`` (:mod:`mimir.ops.pull`): the plan lists the files, sizes and
the estimate when it is known; the pull downloads into the Hugging Face cache, verifies,
estimates from the metadata, and writes ``[models.ID]`` and the roles into the config file
the server was started with. The running server keeps its settings: the new model is used
after a restart.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import gradio as gr

from mimir.auth.roles import require
from mimir.auth.web import address_of, principal_of
from mimir.ui import render
from mimir.units import format_bytes

if TYPE_CHECKING:
    from mimir.app import MimirApp

#: Seconds between progress lines while a download runs.
PROGRESS_EVERY_S = 0.5
#: One pull at a time per server: downloads compete for the same disk and network.
_pull_lock = threading.Lock()


def _md(text: str) -> str:
    return render.escape_markdown(text)


class PullHandlers:
    def __init__(self, app: MimirApp):
        self.app = app

    def _refused(self, request: gr.Request | None) -> str | None:
        """None when the signed-in user may pull (admins; the local user without auth)."""
        try:
            require(principal_of(request), "pull_model")
        except Exception as exc:
            return render.error_markdown(exc)
        return None

    def _plan(self, repo: str, file: str, model_id: str, roles: Sequence[str]):
        from mimir.ops.pull import plan_pull

        response_spec = self.app.settings.models[self.app.settings.model_for_role("response")]
        return plan_pull(
            (repo or "").strip(), filename=(file or "").strip() or None, model_id=(model_id or "").strip() or None,
            roles=list(roles or ()), context_length=response_spec.context_length,
        )

    def _plan_lines(self, plan) -> list[str]:
        from mimir.ops.pull import describe_estimate

        lines = [f"**{_md(plan.repo.repo_id)}** @ {_md(plan.repo.revision)}: {plan.kind} model, id `{plan.model_id}`"]
        lines += [f"- `{f.path}` {format_bytes(f.size_bytes)}" for f in plan.files]
        lines.append(f"To download: {format_bytes(plan.download_bytes)} of {format_bytes(plan.total_bytes)}.")
        before = plan.estimate_before
        budget = self.app.settings.budget.ram_bytes
        if before is not None:
            verdict = "fits" if before.total_bytes <= budget else "does **not** fit"
            lines.append(f"Estimate at {plan.context_length} tokens: {describe_estimate(before)}; {verdict} "
                         f"the {format_bytes(budget)} budget.")
        else:
            lines.append("The estimate is read from the file's metadata once downloaded.")
        return lines

    def plan(self, repo: str, file: str, model_id: str, roles: list[str], request: gr.Request = None) -> str:
        refused = self._refused(request)
        if refused:
            return refused
        try:
            return "\n\n".join(self._plan_lines(self._plan(repo, file, model_id, roles)))
        except Exception as exc:
            return render.error_markdown(exc)

    def pull(self, repo: str, file: str, model_id: str, roles: list[str], request: gr.Request = None) -> Iterator[str]:
        refused = self._refused(request)
        if refused:
            yield refused
            return
        if not _pull_lock.acquire(blocking=False):
            yield "**Error:** another pull is running on this server; try again when it has finished."
            return
        try:
            who = principal_of(request)
            self.app.audit.record(who.name, "model.pull", (repo or "").strip()[:200],
                                  {"file": (file or "").strip()[:200] or None, "roles": list(roles or ())},
                                  address=address_of(request))
            yield from self._pull(repo, file, model_id, roles)
        finally:
            _pull_lock.release()

    def _pull(self, repo: str, file: str, model_id: str, roles: list[str]) -> Iterator[str]:
        from mimir.ops.pull import PullProgress, describe_estimate, execute_pull, write_model_config

        try:
            plan = self._plan(repo, file, model_id, roles)
        except Exception as exc:
            yield render.error_markdown(exc)
            return
        head = "\n\n".join(self._plan_lines(plan))
        progress = PullProgress(total_bytes=plan.total_bytes)
        box: dict[str, object] = {}

        def run() -> None:
            try:
                box["result"] = execute_pull(plan, self.app.settings.budget, progress=progress)
            except BaseException as exc:  # shown in the page
                box["error"] = exc

        worker = threading.Thread(target=run, name="mimir-ui-pull", daemon=True)
        worker.start()
        while worker.is_alive():
            worker.join(PROGRESS_EVERY_S)
            yield (f"{head}\n\nDownloading `{progress.current_file or '...'}`: {format_bytes(progress.done_bytes)} of "
                   f"{format_bytes(progress.total_bytes)} ({progress.fraction:.0%})")
        if "error" in box:
            yield f"{head}\n\n{render.error_markdown(box['error'])}"  # type: ignore[arg-type]
            return
        result = box["result"]
        verdict = "fits" if result.fits else "does **not** fit"  # type: ignore[attr-defined]
        lines = [head, f"Downloaded to `{result.local_path}`.",  # type: ignore[attr-defined]
                 f"Estimate: {describe_estimate(result.estimate)}; {verdict} the "  # type: ignore[attr-defined]
                 f"{format_bytes(result.budget_bytes)} {result.device} budget."]  # type: ignore[attr-defined]
        source = self.app.settings.source
        if source is None:
            lines.append("Not written to a config file: this server was started without `--config`.")
        else:
            try:
                write_model_config(source, plan)
                lines.append(f"Wrote `[models.{plan.model_id}]` to `{source}`; restart the server to use it.")
            except Exception as exc:
                lines.append(render.error_markdown(exc))
        yield "\n\n".join(lines)
