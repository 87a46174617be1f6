"""The web app: Gradio Blocks with Chat, Memory, Cache and Models tabs, on a FastAPI app.

``create_app(mimir_app)`` returns the FastAPI application (Gradio mounted at ``/``), which
:mod:`mimir.ui.server` serves with uvicorn. HTTP API routes can join it: pass a FastAPI
app that already has them as ``fastapi_app`` (they must be added before the mount at ``/``).

Per visitor state: ``gr.State`` holds the open conversation (one per browser tab). Who the
visitor is comes from the server (:mod:`mimir.auth.web`: the sign-in cookie, or the single
local user with ``auth = "none"``), never from the page: the past-sessions list holds the
user's own sessions (teachers and admins: everyone's, others' read-only), the Memory tab
their own turns (teachers and admins: all), and the Cache and Models tabs are shown to
admins only. Every handler checks the role again itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mimir.errors import MissingExtraError

if TYPE_CHECKING:
    import gradio as gr
    from fastapi import FastAPI

    from mimir.app import MimirApp

LATEX_DELIMITERS = [
    {"left": "$$", "right": "$$", "display": True},
    {"left": "$", "right": "$", "display": False},
    {"left": "\\[", "right": "\\]", "display": True},
    {"left": "\\(", "right": "\\)", "display": False},
]

#: Opening messages from the original Mimir's own benchmark prompts.
EXAMPLES = [
    "What is summation?",
    "What does cos, tan and sin do?",
    "Solve 3x - y = 7 and 2x + 3y = 1",
    "Make a bar chart of my test scores: math 82, reading 91, science 77. What should I study?",
    "Can you make some practice questions about subject-verb agreement?",
]
#: Seconds between refreshes of the Memory and Models tabs while the page is open.
REFRESH_S = 5.0

#: Signing out is a POST (a link could be triggered by another site).
LOGOUT_FORM = (
    '<form method="post" action="/logout" style="text-align:right">'
    '<button type="submit" id="logout-button" style="text-decoration:underline;cursor:pointer">Sign out</button>'
    "</form>"
)

CSS = """
#chat-status, #chat-status p { font-size: 0.85em; opacity: 0.8; }
footer { display: none !important; }
"""


def _gradio():
    try:
        import gradio as gr
    except ImportError:
        raise MissingExtraError("gradio", "ui", "The web app") from None
    return gr


def build_blocks(app: MimirApp) -> gr.Blocks:
    """The four tabs, wired to :class:`~mimir.ui.handlers.Handlers` on ``app``."""
    gr = _gradio()
    from mimir.config import ROLES
    from mimir.ui.handlers import Handlers
    from mimir.ui.pull import PullHandlers
    from mimir.ui.render import CACHE_HEADERS, MODEL_HEADERS, PLAN_HEADERS, RESIDENT_HEADERS, STEP_HEADERS

    h = Handlers(app)
    ph = PullHandlers(app)
    admin_tabs = app.settings.auth.mode == "none"  # the single local user is an admin
    # Files Gradio copies to serve (charts) are deleted after a day, checked hourly.
    with gr.Blocks(title="Mimir tutor", analytics_enabled=False, delete_cache=(3600, 86400)) as blocks:
        session = gr.State(None)
        memory_key = gr.State(None)
        picked_turn = gr.State(None)
        plan_state = gr.State(None)
        timer = gr.Timer(REFRESH_S)
        with gr.Row(equal_height=True):
            gr.Markdown("## Mimir: a patient tutor that runs inside a memory budget")
            with gr.Column(scale=0, min_width=260):
                user_line = gr.Markdown(elem_id="user-line")
                if app.settings.auth.required:
                    gr.HTML(LOGOUT_FORM, elem_id="logout")
        with gr.Tabs():
            with gr.Tab("Chat", id="chat"):
                with gr.Row():
                    with gr.Column(scale=4):
                        chatbot = gr.Chatbot(
                            label="Mimir", latex_delimiters=LATEX_DELIMITERS, height=520, elem_id="chatbot",
                            feedback_options=None, buttons=["copy"],
                        )
                        with gr.Row():
                            box = gr.Textbox(
                                placeholder="Ask the tutor something, e.g. What is summation?", show_label=False,
                                scale=6, elem_id="message", autofocus=True,
                            )
                            send = gr.Button("Send", variant="primary", scale=1, elem_id="send")
                        chat_status = gr.Markdown(elem_id="chat-status")
                        gr.Examples(EXAMPLES, inputs=box, label="Examples")
                    with gr.Column(scale=1, min_width=220):
                        new = gr.Button("New session", elem_id="new-session")
                        sessions = gr.Dropdown(label="Past sessions", choices=[], value=None, elem_id="sessions")
                        reopen = gr.Button("Open session", elem_id="open-session")
            with gr.Tab("Memory", id="memory") as memory_tab:
                memory_msg = gr.Markdown(elem_id="memory-message")
                budget_line = gr.Markdown(elem_id="memory-budget")
                plot = gr.Plot(label="Memory timeline", elem_id="memory-plot")
                turn_pick = gr.Dropdown(label="Turn", choices=[], value=None, elem_id="memory-turn")
                steps = gr.Dataframe(headers=list(STEP_HEADERS), label="Steps of the chosen turn",
                                     interactive=False, wrap=True, elem_id="memory-steps")
                resident = gr.Dataframe(headers=list(RESIDENT_HEADERS), label="Resident models",
                                        interactive=False, elem_id="memory-resident")
            # Admin tabs start hidden when users sign in; load_page shows them to admins (and
            # every handler behind them checks the role again).
            with gr.Tab("Cache", id="cache", visible=admin_tabs) as cache_tab:
                cache_totals = gr.Markdown(elem_id="cache-totals")
                rescan = gr.Button("Rescan", size="sm")
                repos = gr.Dataframe(headers=list(CACHE_HEADERS), label="Hugging Face cache", interactive=False,
                                     wrap=True, elem_id="cache-repos")
                model_files = gr.Dataframe(label="Configured model files outside the cache, and missing ones",
                                           interactive=False, wrap=True)
                warnings = gr.Dataframe(label="Warnings", interactive=False, wrap=True, elem_id="cache-warnings")
                with gr.Accordion("Prune the cache", open=True):
                    gr.Markdown("Choose what to remove, press **Plan** for a dry run, then confirm to delete. "
                                "Revisions a configured model pins are always kept; nothing outside the cache is touched.")
                    with gr.Row():
                        unreferenced = gr.Checkbox(label="Unreferenced repos", value=True, elem_id="prune-unreferenced")
                        old_revisions = gr.Checkbox(label="Old revisions", elem_id="prune-old")
                        incomplete = gr.Checkbox(label="Incomplete downloads", elem_id="prune-incomplete")
                    plan_btn = gr.Button("Plan (dry run)", elem_id="prune-plan")
                    plan_line = gr.Markdown(elem_id="prune-plan-line")
                    plan_view = gr.Dataframe(headers=list(PLAN_HEADERS), interactive=False, wrap=True,
                                             label="What would go", elem_id="prune-plan-table")
                    confirm = gr.Checkbox(label="I have read the plan: delete these files", elem_id="prune-confirm")
                    delete = gr.Button("Delete", variant="stop", interactive=False, elem_id="prune-delete")
                    prune_result = gr.Markdown(elem_id="prune-result")
            with gr.Tab("Models", id="models", visible=admin_tabs) as models_tab:
                counters = gr.Markdown(elem_id="models-counters")
                models_budget = gr.Markdown()
                models = gr.Dataframe(headers=list(MODEL_HEADERS), label="Configured models",
                                      interactive=False, wrap=True, elem_id="models-table")
                with gr.Row():
                    roles = gr.Dataframe(headers=["role", "model"], label="Roles", interactive=False, scale=1)
                    with gr.Column(scale=1):
                        unload_pick = gr.Dropdown(label="Idle resident model", choices=[], value=None,
                                                  elem_id="unload-pick")
                        unload_btn = gr.Button("Unload", elem_id="unload")
                        unload_msg = gr.Markdown(elem_id="unload-message")
                with gr.Accordion("Pull a model from the Hugging Face Hub (admins)", open=False, elem_id="pull"):
                    gr.Markdown("Plan shows the files, sizes and estimate; Pull downloads into the Hugging Face "
                                "cache, checks the files, and adds the model to this server's config file "
                                "(used after a restart). `mimir models catalog` lists known-good models.")
                    with gr.Row():
                        pull_repo = gr.Textbox(label="Repo", placeholder="Qwen/Qwen2.5-1.5B-Instruct-GGUF",
                                               elem_id="pull-repo", scale=3)
                        pull_file = gr.Textbox(label="File (GGUF repos with several)", elem_id="pull-file", scale=3)
                        pull_id = gr.Textbox(label="Model id (optional)", elem_id="pull-id", scale=2)
                    pull_roles = gr.CheckboxGroup(choices=list(ROLES), label="Roles for the new model",
                                                  elem_id="pull-roles")
                    with gr.Row():
                        pull_plan_btn = gr.Button("Plan (dry run)", elem_id="pull-plan")
                        pull_btn = gr.Button("Pull", variant="primary", elem_id="pull-run")
                    pull_msg = gr.Markdown(elem_id="pull-message")

        # -- wiring ----------------------------------------------------------------------
        chat_outputs = [chatbot, box, chat_status, session, sessions]
        for trigger in (box.submit, send.click):
            trigger(h.chat, [box, chatbot, session], chat_outputs, concurrency_limit=8, show_progress="minimal")
        new.click(h.new_session, None, [chatbot, chat_status, session, sessions], queue=False)
        # Explicit API names: gradio_client callers (and the access tests) rely on them.
        reopen.click(h.open_session, [sessions], [chatbot, chat_status, session], api_name="open_session")
        blocks.load(h.load_page, None, [sessions, chat_status, user_line, cache_tab, models_tab])

        memory_outputs = [plot, turn_pick, steps, resident, budget_line, memory_key, memory_msg]
        memory_inputs = [picked_turn, memory_key]
        memory_tab.select(h.memory, memory_inputs, memory_outputs)
        turn_pick.input(h.pick_turn, [turn_pick, memory_key], [*memory_outputs, picked_turn])
        models_outputs = [counters, models_budget, roles, models, unload_pick]
        models_tab.select(h.models, None, models_outputs)
        timer.tick(h.memory, memory_inputs, memory_outputs, show_progress="hidden")
        timer.tick(h.models, None, models_outputs, show_progress="hidden")
        blocks.load(h.memory, memory_inputs, memory_outputs)
        blocks.load(h.models, None, models_outputs)
        unload_btn.click(h.unload, [unload_pick], [unload_msg, *models_outputs], api_name="unload")
        pull_inputs = [pull_repo, pull_file, pull_id, pull_roles]
        pull_plan_btn.click(ph.plan, pull_inputs, [pull_msg], api_name="pull_plan")
        pull_btn.click(ph.pull, pull_inputs, [pull_msg], concurrency_limit=1, show_progress="minimal", api_name="pull")

        scan_outputs = [cache_totals, repos, warnings, model_files]
        cache_tab.select(h.scan, None, scan_outputs)
        rescan.click(h.scan, None, scan_outputs)
        plan_btn.click(h.plan, [unreferenced, old_revisions, incomplete],
                       [plan_line, plan_view, plan_state, confirm, delete, prune_result], api_name="prune_plan")
        for option in (unreferenced, old_revisions, incomplete):
            option.input(h.options_changed, None, [plan_line, plan_state, confirm, delete])
        confirm.input(h.confirm_changed, [confirm, plan_state], [delete])
        delete.click(h.execute, [confirm, plan_state], [prune_result, plan_state, confirm, delete, *scan_outputs],
                     api_name="prune")
    return blocks


def create_app(app: MimirApp, *, fastapi_app: FastAPI | None = None) -> FastAPI:
    """The FastAPI application: the OpenAI-compatible API under ``/v1`` and the web app at ``/``."""
    gr = _gradio()
    try:
        from fastapi import FastAPI
    except ImportError:
        raise MissingExtraError("fastapi", "ui", "The web app") from None
    if fastapi_app is None:
        from mimir.api.openai import install
        from mimir.api.ops import install_ops

        server = FastAPI(title="Mimir")
        install(server, app)  # /v1 routes first: Gradio, mounted at "/", takes the rest
        install_ops(server, app)  # /healthz, /readyz, /metrics
    else:
        server = fastapi_app
    from mimir.auth.web import install_guard

    install_guard(server, app)  # sign-in, Host and Origin checks in front of everything
    blocks = build_blocks(app)
    blocks.queue(default_concurrency_limit=4)
    charts = app.settings.home / "charts"
    charts.mkdir(parents=True, exist_ok=True)
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])
    return gr.mount_gradio_app(
        server, blocks, path="/", allowed_paths=[str(charts)], ssr_mode=False, theme=theme, css=CSS,
        show_error=True, mcp_server=False,
    )
