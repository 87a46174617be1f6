"""The web app's pure render functions: tables, plot data, chat messages, from real records.

Records come from real components: turns run through the tutor on a scripted backend with
real SQLite and telemetry, a real Hugging Face cache tree on disk, real cleanup plans.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from cache_trees import build_cache
from mimir.app import MimirApp
from mimir.cache import plan_cleanup, scan_cache
from mimir.config import settings_from_dict
from mimir.errors import BudgetExceededError, GenerationError, InvalidInputError
from mimir.core.events import ModelEvent
from mimir.core.records import StepRecord
from mimir.tutor.summary import status_line, turn_status_line
from mimir.ui import render

MiB = 1024 * 1024
pytest.importorskip("matplotlib")


def scripted_app(options: dict | None = None, extra_models: dict | None = None, tutor: dict | None = None) -> MimirApp:
    models = {"default": {"backend": "scripted", "path": "scripted", "options": {
        "replies": ["A sum adds terms: $\\sum_{i=1}^{3} i = 6$."], **(options or {})}}}
    models.update(extra_models or {})
    data = {"models": models, "roles": {r: "default" for r in ("tool_decision", "routing", "thinking", "response")},
            "budget": {"memory": "1GiB"}, "tutor": {"thinking_max_tokens": 8, **(tutor or {})}}
    return MimirApp(settings_from_dict(data))


def step(name: str, *, turn: str | None = "t1", session: str | None = "s1", rss_after: int | None = 100 * MiB,
         peak: int | None = 120 * MiB, events=(), cuda_after: int | None = None, seq: int = 0) -> StepRecord:
    return StepRecord(step_id=f"{turn}-{name}-{seq}", name=name, agent=name, model="default", session_id=session,
                      turn_id=turn, seq=seq, started_at=1000.0 + seq, wall_s=0.5, rss_before_bytes=90 * MiB,
                      rss_after_bytes=rss_after, rss_peak_bytes=peak, cuda_allocated_after_bytes=cuda_after,
                      events=tuple(events))


# -- chat --------------------------------------------------------------------------------


def test_status_line_names_time_tokens_segments_and_peak():
    line = status_line(wall_s=12.34, tokens_in=300, tokens_out=24,
                              flags=("GENERAL_FORMATTING", "LATEX_FORMATTING"), peak_rss_bytes=3 * MiB // 2)
    assert line == "12.3s · 300 tokens in, 24 out · segments: GENERAL_FORMATTING, LATEX_FORMATTING · peak RSS 1.5MiB"
    bare = status_line(wall_s=None, tokens_in=None, tokens_out=None, flags=(), peak_rss_bytes=None,
                              cuda_peak_bytes=2 * MiB)
    assert bare == "time - · - tokens in, - out · segments: none · peak RSS - · CUDA peak 2.0MiB"


def test_a_real_turn_renders_its_status_and_steps():
    with scripted_app() as app:
        result = app.tutor.run_turn("Can you explain summation in calculus?")
        line = turn_status_line(result)
        assert f"{result.telemetry.tokens_out} out" in line and "LATEX_FORMATTING" in line
        assert line.endswith(f"peak RSS {result.telemetry.peak_rss_bytes / MiB:.1f}MiB")
        table = render.steps_table(result.telemetry.steps)
        assert table.headers == render.STEP_HEADERS
        assert table.column("step") == [s.name for s in result.telemetry.steps]
        names = table.column("step")
        events = dict(zip(names, table.column("events")))
        # the model loads inside the first step that uses it, and the table says so
        first_model_step = next(s.name for s in result.telemetry.steps if s.model == "default")
        assert events[first_model_step].startswith("load default")
        assert dict(zip(names, table.column("model")))["response"] == "default"
        assert dict(zip(names, table.column("tokens in/out")))["rules"] == "-"


def test_answer_messages_put_the_chart_first_and_the_status_last():
    msgs = render.answer_messages("Here is why.", status="1.0s · ...", chart_path="/c/chart.png",
                                  chart_description="bar chart of scores", notices=["cut *short*"])
    assert msgs[0] == {"role": "assistant", "content": {"path": "/c/chart.png", "alt_text": "bar chart of scores"}}
    assert msgs[1] == {"role": "assistant", "content": "Here is why."}
    assert msgs[2]["content"] == "_Note: cut \\*short\\*_"
    assert msgs[3]["metadata"] == {"title": "1.0s · ...", "status": "done"}
    failed = render.answer_messages("partial", error="model 'x' <b>failed</b>")
    assert failed == [{"role": "assistant", "content": "partial\n\n**Error:** model 'x' \\<b\\>failed\\</b\\>"}]
    assert render.status_message("loading", pending=True)["metadata"]["status"] == "pending"


def test_history_messages_rebuild_a_stored_session_with_its_failed_turn():
    models_opts = {"fail_on": "explode"}
    with scripted_app(models_opts, tutor={"thinking": False}) as app:
        ok = app.tutor.run_turn("What is photosynthesis?")
        with pytest.raises(GenerationError):
            app.tutor.run_turn("please explode", ok.session_id)
        turns = app.conversations.turns(ok.session_id)
        msgs = render.history_messages(turns, {ok.turn_id: 5 * MiB})
    assert [m["role"] for m in msgs] == ["user", "assistant", "assistant", "user", "assistant"]
    assert msgs[0]["content"] == "What is photosynthesis?"
    assert msgs[1]["content"] == ok.response
    assert "peak RSS 5.0MiB" in msgs[2]["metadata"]["title"]
    assert msgs[3]["content"] == "please explode"
    assert msgs[4]["content"].startswith("**Error:**") and "explode" in msgs[4]["content"]


def test_session_choices_are_newest_first_with_turn_counts():
    from mimir.storage.conversations import SessionInfo

    now = time.time()
    older = SessionInfo("s-old", "Fractions", now - 7200, now - 7200, 1)
    newer = SessionInfo("s-new", "Summation", now - 60, now - 60, 3)
    assert render.session_choices([older, newer], now_s=now) == [
        ("Summation (3 turns, 1 minute ago)", "s-new"),
        ("Fractions (1 turn, 2 hours ago)", "s-old"),
    ]


def test_error_markdown_is_readable_and_escaped():
    err = BudgetExceededError("big", 4 * 1024**3, 1024**3)
    assert render.error_markdown(err) == f"**Error:** {err}"  # nothing in it to escape
    assert "4.0GiB" in render.error_markdown(err)
    marked = InvalidInputError("model <b>x</b> has *stars*, `ticks`, a_b, [link](u) and $x$ | #1 \\")
    assert render.error_markdown(marked) == (
        "**Error:** model \\<b\\>x\\</b\\> has \\*stars\\*, \\`ticks\\`, a\\_b, \\[link\\](u) and "
        "\\$x\\$ \\| \\#1 \\\\"
    )
    other = render.error_markdown(KeyError("x"))
    assert other.startswith("**Internal error:** KeyError") and "server keeps running" in other


# -- memory ------------------------------------------------------------------------------


def test_timeline_marks_turn_boundaries_gpu_and_events():
    load = ModelEvent("load", "default", "first use", 300 * MiB, measured_bytes=200 * MiB)
    steps = [step("history", seq=0), step("response", seq=1, events=[load], rss_after=300 * MiB),
             step("history", turn="t2", seq=0), step("response", turn="t2", seq=1, cuda_after=64 * MiB),
             step("lone", turn=None, session=None, seq=0)]
    tl = render.timeline(steps, budget_ram_bytes=1024 * MiB, budget_gpu_bytes=512 * MiB)
    assert [p.index for p in tl.points] == [0, 1, 2, 3, 4]
    assert tl.turn_starts == (2, 4)
    assert tl.points[1].events == ("load default",)
    assert tl.points[1].rss_after_bytes == 300 * MiB
    assert tl.has_gpu and tl.points[3].gpu_bytes == 64 * MiB and tl.points[0].gpu_bytes is None
    assert not render.timeline([], budget_ram_bytes=None).points


def test_timeline_figure_draws_the_budget_line_and_breaks_a_far_axis():
    from mimir.ui.plots import needs_break, timeline_figure

    steps = [step("routing", seq=0, rss_after=100 * MiB), step("response", seq=1, rss_after=200 * MiB, peak=250 * MiB)]
    near = render.timeline(steps, budget_ram_bytes=400 * MiB)
    fig = timeline_figure(near)
    (ax,) = fig.axes
    budget = [line for line in ax.get_lines() if line.get_label().startswith("RAM budget")]
    assert len(budget) == 1 and list(budget[0].get_ydata()) == [400.0, 400.0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["routing", "response"]
    after = next(line for line in ax.get_lines() if line.get_label() == "RSS after step")
    assert list(after.get_ydata()) == [100.0, 200.0]

    far = render.timeline(steps, budget_ram_bytes=16 * 1024 * MiB)
    assert needs_break(far) and not needs_break(near)
    top, bottom = timeline_figure(far).axes
    assert top.get_ylim()[0] < 16 * 1024 < top.get_ylim()[1]
    assert bottom.get_ylim() == pytest.approx((0, 250 * 1.3))  # the steps keep their own scale

    empty = timeline_figure(render.timeline([], budget_ram_bytes=400 * MiB))
    assert any("No steps recorded yet" in t.get_text() for t in empty.axes[0].texts)


def test_turn_choices_hold_no_message_text_and_mark_own_turns():
    with scripted_app(tutor={"thinking": False}) as app:
        mine = app.tutor.run_turn("My secret question about algebra")
        theirs = app.tutor.run_turn("Someone else's question")
        app.telemetry.flush()
        from mimir.storage.telemetry_store import TelemetryStore

        turns = TelemetryStore(app.db).turns(last=5)
    choices = render.turn_choices(turns, own_sessions=[mine.session_id])
    assert [c[1] for c in choices] == [theirs.turn_id, mine.turn_id]  # newest first
    labels = " ".join(c[0] for c in choices)
    assert "secret" not in labels and "question" not in labels
    assert choices[1][0].endswith("· yours") and "yours" not in choices[0][0]


def test_turn_choices_name_the_instance_that_ran_each_turn(monkeypatch):
    monkeypatch.setenv("MIMIR_INSTANCE", "web-2")
    with scripted_app(tutor={"thinking": False}) as app:
        done = app.tutor.run_turn("What is 2 + 2?")
        app.telemetry.flush()
        from mimir.storage.telemetry_store import TelemetryStore

        store = TelemetryStore(app.db)
        turns = store.turns(last=5)
        instances = store.turn_instances([t.turn_id for t in turns])
    assert instances == {done.turn_id: "web-2"}
    [(label, turn_id)] = render.turn_choices(turns, instances=instances)
    assert turn_id == done.turn_id and f"{done.turn_id} · on web-2 ·" in label
    assert " on " not in render.turn_choices(turns)[0][0]  # one instance: no label needed


def test_resident_table_and_budget_line_from_a_real_manager():
    with scripted_app({"size_bytes": 64 * MiB, "alloc_bytes": 8 * MiB}) as app:
        with app.manager.use("default"):
            leased = app.manager.status()
        idle = app.manager.status()
    table = render.resident_table(leased)
    assert table.column("model") == ["default"] and table.column("estimate") == ["64.0MiB"]
    assert table.column("in use") == ["yes (1)"] and table.column("idle for") == ["in use"]
    r = idle.resident[0]
    later = render.resident_table(idle, now_s=r.last_used + 42)
    assert later.column("in use") == ["no"] and later.column("idle for") == ["42s"]
    line = render.budget_markdown(idle, ram_setting="1GiB", rss_now_bytes=300 * MiB)
    assert r.charged_bytes == 64 * MiB  # the estimate: larger than the 8 MiB it allocates
    assert line.startswith("**RAM budget** 1.0GiB (`1GiB`): models charge 64.0MiB (6%)")
    assert "process RSS now 300.0MiB" in line and "no load in progress" in line
    assert render.idle_models(idle) == ["default"] and render.idle_models(leased) == []


# -- models ------------------------------------------------------------------------------


def test_models_table_and_counters():
    from mimir.cli.models import model_rows

    extra = {"spare": {"backend": "scripted", "path": "s2", "options": {"size_bytes": 2 * MiB}}}
    with scripted_app({"size_bytes": 3 * MiB}, extra) as app:
        with app.manager.use("default"):
            pass
        table = render.models_table(model_rows(app))
        status = app.manager.status()
    rows = {r[0]: dict(zip(table.headers, r)) for r in table.rows}
    assert rows["default"]["roles"] == "tool_decision, routing, thinking, response"
    assert rows["default"]["resident"] == "yes" and rows["spare"]["resident"] == "no"
    assert rows["spare"]["estimate"] == "2.0MiB" and rows["spare"]["roles"] == "-"
    assert render.counters_markdown(status, keep_alive_s=300) == (
        "**Loads** 1 · **evictions** 0 · **unloads** 0 · **failed loads** 0 · keep-alive 300s"
    )
    assert render.roles_table({"routing": "default"}).rows == (("routing", "default"),)


# -- cache -------------------------------------------------------------------------------


def human_size(n: int) -> str:
    """Sizes as the page should show them, written out here rather than taken from mimir."""
    if n < 1024:
        return f"{n}B"
    if n < 1024**2:
        return f"{n / 1024:.1f}KiB"
    return f"{n / 1024**2:.1f}MiB"


@pytest.fixture
def cache_report(tmp_path):
    tree = build_cache(tmp_path / "cache-base")
    settings = settings_from_dict({"models": {"alpha": {"repo": "org/alpha"}}}, env={})
    return tree, scan_cache(tree.root, settings)


def test_cache_table_totals_and_warnings(cache_report):
    tree, report = cache_report
    table = render.cache_table(report)
    by_repo = {r[0]: dict(zip(table.headers, r)) for r in table.rows}
    assert set(by_repo) == {"model/org/alpha", "model/org/beta", "model/org/gamma", "dataset/org/data", "model/org/linked"}
    assert by_repo["model/org/alpha"]["used by"].startswith("alpha (tool_decision, routing, thinking, response)@bbbbbbbb")
    assert by_repo["model/org/beta"]["used by"] == "unreferenced"
    assert by_repo["model/org/alpha"]["revisions"] == "bbbbbbbb (main), aaaaaaaa"
    assert by_repo["model/org/alpha"]["size"] == human_size(report.repo("org/alpha").size_on_disk_bytes)
    totals = render.cache_totals_markdown(report)
    assert f"**{report.repos_count} repo(s), {human_size(report.size_on_disk_bytes)}**" in totals
    assert "1 referenced" in totals and f"{len(report.warnings)} warning(s)" in totals
    warnings = render.cache_warnings_table(report)
    kinds = set(warnings.column("kind"))
    assert {"incomplete", "outside_symlink", "corrupted_repo", "not_a_repo"} <= kinds
    assert "notes.txt" in warnings.column("path")  # relative to the cache directory
    missing = render.cache_totals_markdown(scan_cache(tree.root.parent / "nowhere"))
    assert missing.startswith("No Hugging Face cache at")


def test_plan_is_shown_before_execution_and_the_result_after(cache_report):
    tree, report = cache_report
    plan = plan_cleanup(report, unreferenced=True, incomplete=True)
    table = render.plan_table(plan)
    items = dict(zip(table.column("item"), table.column("what")))
    assert items["model/org/beta"] == "repo" and items["dataset/org/data"] == "repo"
    assert "model/org/alpha" not in items  # referenced: kept
    assert items["model/org/gamma"] == "repo"  # its partial download goes with it
    assert any(what == "refused" for what in table.column("what"))  # org/linked leaves the cache
    text = render.plan_markdown(plan)
    assert f"free **{human_size(plan.expected_freed_bytes)}** ({plan.expected_freed_bytes} bytes)" in text
    assert tree.repo("org/beta").is_dir()  # a plan deletes nothing
    result = plan.execute()
    done = render.cleanup_result_markdown(result)
    assert done.startswith(f"**Freed {human_size(result.freed_bytes)}** ({result.freed_bytes} bytes; planned {plan.expected_freed_bytes} bytes)")
    assert result.freed_bytes > 0 and not tree.repo("org/beta").exists()
    assert f"{len(result.deleted)} path(s) deleted." in done and len(result.deleted) == 3


def test_empty_plan_says_nothing_to_delete(cache_report):
    _, report = cache_report
    plan = plan_cleanup(scan_cache(report.cache_dir.parent / "empty"), unreferenced=True)
    assert render.plan_markdown(plan) == "**Dry run:** nothing to delete for these options."
    assert render.plan_table(plan).rows == ()


def test_plan_table_lists_partial_downloads_relative_to_the_cache(cache_report):
    _, report = cache_report
    table = render.plan_table(plan_cleanup(report, incomplete=True))
    assert table.rows == (("file", "250B", "incomplete", os.path.join("models--org--gamma", "blobs", "0123abcd.incomplete")),)


def test_table_to_frame_keeps_headers_and_cells():
    pytest.importorskip("pandas")
    table = render.Table(("a", "b"), (("1", "x"), ("2", "y")))
    frame = table.to_frame()
    assert list(frame.columns) == ["a", "b"] and frame.values.tolist() == [["1", "x"], ["2", "y"]]


def test_in_cache_shortens_only_paths_inside_the_cache(tmp_path):
    root = tmp_path / "hub"
    assert render.in_cache(root / "models--a--b" / "blobs" / "x", root) == os.path.join("models--a--b", "blobs", "x")
    assert render.in_cache(tmp_path / "elsewhere", root) == str(tmp_path / "elsewhere")
    assert render.code("a`b\nc") == "`a'b c`"
    assert Path(render.in_cache(root, root)) == Path(".")


def test_cleanup_result_lists_what_was_kept_refused_or_failed(tmp_path):
    from mimir.cache.cleanup import CleanupResult, FailedPath, SkippedPath

    result = CleanupResult(
        expected_freed_bytes=2048, freed_bytes=1024, deleted=(tmp_path / "a",),
        refused=(SkippedPath(tmp_path / "link", "links outside the cache"),),
        kept=(SkippedPath(tmp_path / "blob", "still linked by a remaining snapshot"),),
        failed=(FailedPath(tmp_path / "ro", "Permission denied"),),
    )
    lines = render.cleanup_result_markdown(result).splitlines()
    assert lines[0] == "**Freed 1.0KiB** (1024 bytes; planned 2048 bytes), 1 path(s) deleted."
    assert lines[1:] == [
        f"- kept `{tmp_path / 'blob'}`: still linked by a remaining snapshot",
        f"- refused `{tmp_path / 'link'}`: links outside the cache",
        f"- failed `{tmp_path / 'ro'}`: Permission denied",
    ]
