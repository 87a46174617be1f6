"""Pure functions from Mimir's records and snapshots to what the web app shows.

Nothing here touches Gradio, the model manager or the database: every function takes
frozen records (``StepRecord``, ``ManagerStatus``, ``CacheReport``, ``CleanupPlan``...) and
returns a :class:`Table`, a markdown string or chat messages, so all of it is tested without a
server. The plot's data is built here too (:func:`timeline`); drawing it is in
:mod:`mimir.ui.plots`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mimir.cache.report import format_age
from mimir.tutor.summary import status_line
from mimir.units import format_bytes

MiB = 1024 * 1024


@dataclass(frozen=True)
class Table:
    """Column headers and rows of display strings (what a ``gr.Dataframe`` shows)."""

    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]

    def column(self, header: str) -> list[str]:
        i = self.headers.index(header)
        return [row[i] for row in self.rows]

    def to_frame(self):
        import pandas as pd  # a gradio dependency: only the app calls this

        return pd.DataFrame([list(r) for r in self.rows], columns=list(self.headers))


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> Table:
    return Table(tuple(headers), tuple(tuple("-" if v is None else str(v) for v in row) for row in rows))


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"


def code(text: str) -> str:
    """``text`` as an inline code span (paths, ids): shown verbatim."""
    return "`" + text.replace("`", "'").replace("\n", " ") + "`"


def escape_markdown(text: str) -> str:
    """Make user or file text safe inside a markdown line (no markup, no HTML)."""
    out = text.replace("\\", "\\\\")
    for ch in "`*_[]<>|#$":
        out = out.replace(ch, "\\" + ch)
    return out


# -- chat --------------------------------------------------------------------------------


def status_message(text: str, *, pending: bool = False) -> dict[str, Any]:
    """A chat message that shows only a small titled line (a spinner while ``pending``)."""
    return {
        "role": "assistant",
        "content": "",
        "metadata": {"title": text, "status": "pending" if pending else "done"},
    }


def answer_messages(
    response: str,
    *,
    status: str | None = None,
    chart_path: str | None = None,
    chart_description: str | None = None,
    notices: Sequence[str] = (),
    error: str | None = None,
) -> list[dict[str, Any]]:
    """The assistant's side of one turn as chat messages: the answer (or the error),
    the chart inline, notices, and the status line."""
    messages: list[dict[str, Any]] = []
    if chart_path:
        messages.append({"role": "assistant", "content": {"path": chart_path, "alt_text": chart_description or "chart"}})
    if error:
        text = (response + "\n\n" if response else "") + f"**Error:** {escape_markdown(error)}"
        messages.append({"role": "assistant", "content": text})
    else:
        messages.append({"role": "assistant", "content": response or "_(empty answer)_"})
    for notice in notices:
        messages.append({"role": "assistant", "content": f"_Note: {escape_markdown(notice)}_"})
    if status:
        messages.append(status_message(status))
    return messages


def history_messages(turns: Sequence[Any], peaks: Mapping[str, int | None] | None = None) -> list[dict[str, Any]]:
    """A stored session (``StoredTurn`` records, in order) as chat messages, to reopen it."""
    peaks = peaks or {}
    out: list[dict[str, Any]] = []
    for t in turns:
        out.append({"role": "user", "content": t.user_message})
        failed = t.status != "ok"
        status = None
        if not failed:
            status = status_line(
                wall_s=t.wall_s, tokens_in=t.tokens_in, tokens_out=t.tokens_out, flags=t.flags,
                peak_rss_bytes=peaks.get(t.id),
            )
        out += answer_messages(
            t.response or "",
            status=status,
            chart_path=t.tool_output_path,
            chart_description=t.tool_description,
            notices=t.notices,
            error=(t.error or "the turn failed") if failed else None,
        )
    return out


def session_choices(sessions: Sequence[Any], *, now_s: float | None = None, owners: dict | None = None,
                    me: str | None = None) -> list[tuple[str, str]]:
    """``(label, session_id)`` for a dropdown of past sessions, newest first. With
    ``owners`` (user id -> name), sessions of other users than ``me`` name their owner."""
    ordered = sorted(sessions, key=lambda s: -s.updated_at)
    out = []
    for s in ordered:
        owner_id = getattr(s, "owner_id", None)
        whose = ""
        if owners and owner_id != me:
            whose = f" · {owners.get(owner_id, 'local' if owner_id is None else 'removed user')}"
        turns = f"{s.turn_count} turn{'s' if s.turn_count != 1 else ''}"
        out.append((f"{s.title} ({turns}, {format_age(s.updated_at, now_s=now_s)}){whose}", s.id))
    return out


def sessions_info(count: int, everyone: bool = False) -> str:
    """The note under the past-sessions list."""
    if count == 0:
        return "No sessions yet." if everyone else "None of yours yet."
    plural = "s" if count != 1 else ""
    return f"{count} session{plural} of all users (others' read-only)." if everyone else f"{count} session{plural} of yours."


def user_line(name: str, role: str, *, signed_in: bool) -> str:
    """Who is using the page, shown at the top."""
    if not signed_in:
        return ""
    return f"Signed in as **{escape_markdown(name)}** ({role})"


def error_markdown(exc: BaseException) -> str:
    """One readable line for an error, shown in the page (never a traceback)."""
    from mimir.errors import MimirError

    if isinstance(exc, MimirError):
        return f"**Error:** {escape_markdown(str(exc))}"
    return f"**Internal error:** {escape_markdown(type(exc).__name__ + ': ' + str(exc))} (the server keeps running; see its log)"


# -- memory ------------------------------------------------------------------------------

STEP_HEADERS = ("step", "agent", "model", "time", "tokens in/out", "RSS after", "peak", "delta", "GPU", "events")


def steps_table(steps: Sequence[Any]) -> Table:
    """One row per step of a turn: time, memory after, peak, delta, GPU, load/evict events."""
    rows = []
    for s in steps:
        tokens = "-" if s.tokens_in is None and s.tokens_out is None else f"{s.tokens_in or 0}/{s.tokens_out or 0}"
        name = s.name + (f" (error: {s.error})" if s.error else "")
        rows.append(
            (name, s.agent, s.model, _seconds(s.wall_s), tokens, s.rss_after_str, s.rss_peak_str, s.rss_delta_str,
             s.gpu_str, s.events_str)
        )
    return _table(STEP_HEADERS, rows)


def turn_choices(
    turns: Sequence[Any], *, own_sessions: Iterable[str] = (), instances: Mapping[str, str | None] | None = None
) -> list[tuple[str, str]]:
    """``(label, turn_id)`` for the turn picker, newest first. Labels hold no message text:
    the Memory tab is shared by every visitor, conversations are not. With ``instances``
    (turn id -> the instance that ran it), each label names its instance."""
    own = set(own_sessions)
    out = []
    for t in sorted(turns, key=lambda t: -t.started_at):
        when = time.strftime("%H:%M:%S", time.localtime(t.started_at))
        mine = " · yours" if t.session_id in own else ""
        failed = " · failed" if t.error else ""
        where = f" · on {instances.get(t.turn_id) or '?'}" if instances is not None else ""
        label = f"{when} · {t.turn_id}{where} · {len(t.steps)} steps · {t.wall_s:.1f}s · peak {t.peak_rss_str}{mine}{failed}"
        out.append((label, t.turn_id))
    return out


@dataclass(frozen=True)
class TimelinePoint:
    """One step on the memory timeline (memory in bytes)."""

    index: int
    label: str
    turn_id: str | None
    rss_after_bytes: int | None
    rss_peak_bytes: int | None
    gpu_bytes: int | None
    #: ``"load default"``, ``"evict big"``... for the events inside the step.
    events: tuple[str, ...] = ()


@dataclass(frozen=True)
class Timeline:
    """The Memory tab's plot data: steps of recent turns in order, and the budget lines."""

    points: tuple[TimelinePoint, ...]
    budget_ram_bytes: int | None
    budget_gpu_bytes: int | None = None
    #: Index of the first step of each turn after the first (where a separator goes).
    turn_starts: tuple[int, ...] = ()

    @property
    def has_gpu(self) -> bool:
        return any(p.gpu_bytes is not None for p in self.points)

    @property
    def is_empty(self) -> bool:
        return not self.points


def _gpu_bytes(step) -> int | None:
    if step.cuda_allocated_after_bytes is not None:
        return step.cuda_allocated_after_bytes
    return step.gpu_used_after_bytes


def timeline(steps: Sequence[Any], *, budget_ram_bytes: int | None, budget_gpu_bytes: int | None = None) -> Timeline:
    """Steps (oldest first, as ``TelemetryStore.recent_steps`` returns them) as plot points."""
    points = []
    starts = []
    previous: tuple | None = None
    for i, s in enumerate(steps):
        key = (s.session_id, s.turn_id or f"step:{s.step_id}")
        if previous is not None and key != previous:
            starts.append(i)
        previous = key
        points.append(
            TimelinePoint(
                index=i,
                label=s.name,
                turn_id=s.turn_id,
                rss_after_bytes=s.rss_after_bytes,
                rss_peak_bytes=s.rss_peak_bytes,
                gpu_bytes=_gpu_bytes(s),
                events=tuple(f"{e.kind} {e.model_id}" for e in s.events),
            )
        )
    return Timeline(tuple(points), budget_ram_bytes, budget_gpu_bytes, tuple(starts))


RESIDENT_HEADERS = ("model", "backend", "device", "estimate", "measured", "charged", "in use", "pinned", "load time", "idle for")


def resident_table(status, *, now_s: float | None = None) -> Table:
    """Resident models from a ``ManagerStatus``: estimated vs measured size, leases.

    ``now_s`` is on the manager's clock (``time.monotonic()`` by default), like ``last_used``.
    """
    now_s = time.monotonic() if now_s is None else now_s
    rows = []
    for m in status.resident:
        idle = "in use" if m.in_use else f"{max(0.0, now_s - m.last_used):.0f}s"
        rows.append(
            (m.model_id, m.backend, m.device, format_bytes(m.estimate_bytes), format_bytes(m.measured_bytes),
             format_bytes(m.charged_bytes), f"yes ({m.in_use})" if m.in_use else "no", "yes" if m.pinned else "no",
             _seconds(m.load_s), idle)
        )
    return _table(RESIDENT_HEADERS, rows)


def budget_markdown(status, *, ram_setting: str | None = None, rss_now_bytes: int | None = None) -> str:
    """How close the resident models run to the budget, in one line."""
    used = status.used_ram_bytes
    budget = status.budget_ram_bytes
    pct = f" ({100 * used / budget:.0f}%)" if budget else ""
    setting = f" ({code(ram_setting)})" if ram_setting else ""
    parts = [f"**RAM budget** {format_bytes(budget)}{setting}: models charge {format_bytes(used)}{pct}"]
    if status.budget_gpu_bytes:
        gpu_pct = 100 * status.used_gpu_bytes / status.budget_gpu_bytes
        parts.append(f"**GPU budget** {format_bytes(status.budget_gpu_bytes)}: {format_bytes(status.used_gpu_bytes)} ({gpu_pct:.0f}%)")
    if rss_now_bytes is not None:
        parts.append(f"process RSS now {format_bytes(rss_now_bytes)}")
    parts.append(f"loading: {status.loading}" if status.loading else "no load in progress")
    return " · ".join(parts)


# -- models ------------------------------------------------------------------------------

MODEL_HEADERS = ("model", "backend", "roles", "estimate", "measured", "resident", "in use", "pinned", "context", "source")


def models_table(rows: Sequence[Mapping[str, Any]]) -> Table:
    """Configured models (the dicts of ``mimir.inventory.model_rows``)."""
    out = []
    for r in rows:
        measured = format_bytes(r.get("measured_bytes"))
        if r.get("measured_from") == "history":
            measured += " (last run)"
        out.append(
            (r["id"], r["backend"], ", ".join(r["roles"]) or "-", r.get("error") or format_bytes(r.get("estimate_bytes")),
             measured, "yes" if r["resident"] else "no", r.get("in_use", 0), "yes" if r.get("pinned") else "no",
             r["context_length"], r["source"])
        )
    return _table(MODEL_HEADERS, out)


def roles_table(roles: Mapping[str, str]) -> Table:
    return _table(("role", "model"), roles.items())


def counters_markdown(status, *, keep_alive_s: float | None = None) -> str:
    keep = f"{keep_alive_s:g}s" if keep_alive_s else "off"
    return (
        f"**Loads** {status.loads} · **evictions** {status.evictions} · **unloads** {status.unloads} · "
        f"**failed loads** {status.load_failures} · keep-alive {keep}"
    )


def idle_models(status) -> list[str]:
    """Resident models that can be unloaded now (no lease)."""
    return [m.model_id for m in status.resident if not m.in_use]


# -- cache -------------------------------------------------------------------------------

CACHE_HEADERS = ("repo", "size", "files", "revisions", "refs", "last accessed", "last modified", "used by")


def _used_by(repo) -> str:
    if not repo.referenced:
        return "unreferenced"
    return "; ".join(ref.describe() for ref in repo.referenced_by)


def cache_table(report, *, now_s: float | None = None) -> Table:
    rows = []
    for repo in report.repos:
        revs = ", ".join(r.short_hash + (f" ({', '.join(r.refs)})" if r.refs else "") for r in repo.revisions)
        rows.append(
            (repo.cache_id, repo.size_on_disk_str, repo.files_count, revs or "-", ", ".join(sorted(repo.refs)) or "-",
             format_age(repo.last_accessed_epoch_s, now_s=now_s), format_age(repo.last_modified_epoch_s, now_s=now_s),
             _used_by(repo))
        )
    return _table(CACHE_HEADERS, rows)


def cache_totals_markdown(report) -> str:
    if not report.exists:
        return f"No Hugging Face cache at {code(str(report.cache_dir))} (nothing downloaded yet)."
    referenced = report.referenced_repos
    text = (
        f"**{report.repos_count} repo(s), {report.size_on_disk_str}** in {code(str(report.cache_dir))}: "
        f"{len(referenced)} referenced ({format_bytes(sum(r.size_on_disk_bytes for r in referenced))}), "
        f"{len(report.unreferenced_repos)} unreferenced ({report.unreferenced_size_str})"
    )
    if report.incomplete_size_bytes:
        text += f", incomplete downloads {format_bytes(report.incomplete_size_bytes)}"
    if report.corrupted_size_bytes:
        text += f", unreadable {format_bytes(report.corrupted_size_bytes)}"
    text += f", {len(report.warnings)} warning(s)."
    if report.local_files:
        text += f" Model files outside the cache: {format_bytes(report.local_size_bytes)}."
    if report.unreferenced_repos:
        text += " *Unreferenced* means unused by this configuration; other programs sharing the cache may still use them."
    return text


def in_cache(path, cache_dir) -> str:
    """``path`` relative to the cache directory when it is inside it (shorter tables)."""
    try:
        return str(Path(path).relative_to(cache_dir))
    except ValueError:
        return str(path)


def cache_warnings_table(report) -> Table:
    """Warnings; paths relative to the cache directory."""
    return _table(
        ("kind", "repo", "size", "path", "detail"),
        ((w.kind, w.repo_id, w.size_str, in_cache(w.path, report.cache_dir),
          w.message + (f" -> {w.target}" if w.target else ""))
         for w in report.warnings),
    )


def cache_models_table(report) -> Table:
    """Configured model files outside the cache, and configured models missing from disk."""
    rows = [(f.model_id, ", ".join(f.roles) or "-", f.kind, str(f.path), f.size_str, "on disk") for f in report.local_files]
    rows += [(m.model_id, ", ".join(m.roles) or "-", m.source, "-", "-", f"missing: {m.reason}") for m in report.missing]
    return _table(("model", "roles", "source", "path", "size", "state"), rows)


PLAN_HEADERS = ("what", "size", "reason", "item")


def plan_table(plan) -> Table:
    """What a cleanup plan removes (and refuses); paths relative to the cache directory."""
    root = plan.cache_dir
    rows = [("repo", r.size_str, r.reason, f"{r.repo_type}/{r.repo_id}") for r in plan.repos]
    rows += [
        ("revision", r.size_str, r.reason, f"{r.repo_type}/{r.repo_id}@{r.commit_hash[:8]} ({len(r.blobs)} blob(s))")
        for r in plan.revisions
    ]
    rows += [("file", format_bytes(f.size_bytes), f.reason, in_cache(f.path, root)) for f in plan.files]
    rows += [("shared blob", format_bytes(p.size_bytes), "no repo links to it any more", in_cache(p.path, root))
             for p in plan.shared_payloads if p.size_bytes]
    rows += [("refused", "-", s.reason, in_cache(s.path, root)) for s in plan.refused]
    return _table(PLAN_HEADERS, rows)


def plan_markdown(plan) -> str:
    if plan.is_empty:
        text = "**Dry run:** nothing to delete for these options."
    else:
        n = len(plan.repos) + len(plan.revisions) + len(plan.files)
        text = (
            f"**Dry run:** {n} item(s) would go and free **{plan.expected_freed_str}** "
            f"({plan.expected_freed_bytes} bytes). Nothing is deleted until you confirm below."
        )
    if plan.refused:
        text += f" {len(plan.refused)} item(s) refused as unsafe (listed in the table)."
    return text


def cleanup_result_markdown(result) -> str:
    text = (
        f"**Freed {result.freed_str}** ({result.freed_bytes} bytes; planned {result.expected_freed_bytes} bytes), "
        f"{len(result.deleted)} path(s) deleted."
    )
    for s in result.kept:
        text += f"\n- kept {code(str(s.path))}: {escape_markdown(s.reason)}"
    for s in result.refused:
        text += f"\n- refused {code(str(s.path))}: {escape_markdown(s.reason)}"
    for f in result.failed:
        text += f"\n- failed {code(str(f.path))}: {escape_markdown(f.error)}"
    return text


