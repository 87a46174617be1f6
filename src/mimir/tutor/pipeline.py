"""One tutor turn: decisions, tool, thinking, response, post-processing, storage.

```
run_turn(message, session_id)
  clean input (empty -> InvalidInputError: no model call, nothing stored)
  history           last turns of the session, from storage
  decisions         tool decision, rules, routing (order chosen for fewest model loads)
  math_check        the sympy engine: verdict on the student's answer, answer key, practice
                    question, next hint (docs/math.md); "could not check" never stops a turn
  graph_tool        when the tool decision says yes: a chart from the student's data
  thinking_*        hidden context, only for flags that are on, with a token budget
  response          prompt assembly, streamed generation
  postprocess       special tokens, repetition, cut-off endings
  math_claims       false equalities in the answer corrected, with a visible note
  store             the turn, its flags and tool output; steps are linked by turn id
```

Every step runs inside ``telemetry.step(...)``; every model use goes through the runner
(:class:`~mimir.runtime.runner.Runner`: lease, load event, out-of-memory policy, token
accounting, cancellation). The pipeline never constructs a backend.

Prompt layout, for prefix reuse: every model step of a turn sends the same stable prefix,
most stable first (core identity, then the active segments, then the history, then the
student's message), and puts what is specific to the step (a thinking instruction, the
private notes) last. The engine keeps each slot's evaluated prompt, so the response step
only evaluates what follows the thinking step's prefix, and the next turn of the session
reuses the history it already evaluated. A failure after the input was
accepted stores the turn as failed with its error and re-raises; the session stays usable.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from mimir.config import Settings
from mimir.errors import GenerationError, MimirError
from mimir.models.base import ChatMessage, GenerationParams
from mimir.runtime.admission import TurnControl
from mimir.runtime.manager import ModelManager
from mimir.runtime.runner import LoadStarting, Runner
from mimir.storage.conversations import ConversationStore, new_id
from mimir.storage.spool import SPOOL_NAME, Spool
from mimir.telemetry.recorder import Telemetry
from mimir.core.records import TurnRecord
from mimir.mathcheck.worker import MathWorker
from mimir.tutor.deciders import Deciders, DecisionOutcome, outcome
from mimir.tutor.mathstep import ECHOES, NOTES_HEADER, MathNotes, MathStep
from mimir.tutor.postprocess import clean_response, drop_echoes, strip_special_tokens
from mimir.tutor.prompts import PromptLibrary
from mimir.tutor.schedule import order_steps
from mimir.tutor.state import Flag, PromptState
from mimir.tutor.text import clean_history, clean_user_text
from mimir.units import format_bytes

log = logging.getLogger(__name__)

#: Thinking steps in the order they run: (step name, flag, prompt segment).
THINKING_STEPS: tuple[tuple[str, Flag, str], ...] = (
    ("thinking_math", Flag.MATH_THINKING, "thinking_math"),
    ("thinking_question_design", Flag.QUESTION_ANSWER_DESIGN, "thinking_question_answer_design"),
    ("thinking_reasoning", Flag.REASONING_THINKING, "thinking_reasoning"),
)


@dataclass(frozen=True)
class TurnResult:
    session_id: str
    turn_id: str
    response: str
    flags: tuple[str, ...]
    telemetry: TurnRecord
    chart_path: str | None = None
    chart_description: str | None = None
    notices: tuple[str, ...] = ()
    tokens_in: int = 0
    tokens_out: int = 0
    finish_reason: str = "stop"
    #: The math engine's verdict on the student's answer (correct/incorrect/unknown), if any.
    verdict: str | None = None


@dataclass
class _TurnWork:
    """What a turn accumulates as its steps run (private, one per turn)."""

    message: str
    max_tokens: int
    #: None until loaded from storage (or given by the caller).
    history: list[ChatMessage] | None = None
    state: PromptState = field(default_factory=PromptState)
    decisions: DecisionOutcome | None = None
    chart_path: str | None = None
    chart_description: str | None = None
    thinking: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    response: str = ""
    tokens_in: int = 0
    tokens_out: int = 0
    finish_reason: str = "stop"
    math: MathNotes | None = None
    #: The session's open question (practice key) from storage, for the math step.
    pending: dict | None = None


class Tutor:
    def __init__(
        self,
        settings: Settings,
        manager: ModelManager,
        telemetry: Telemetry,
        store: ConversationStore,
        prompts: PromptLibrary | None = None,
        spool: Spool | None = None,
        runner: Runner | None = None,
    ):
        self.settings = settings
        self.tutor = settings.tutor
        self.manager = manager
        self.runner = runner or Runner(manager)
        self.telemetry = telemetry
        self.store = store
        #: Where a finished turn goes when the database refuses it (replayed at the next start).
        self.spool = spool or Spool(settings.home / SPOOL_NAME)
        self.prompts = prompts or PromptLibrary(settings.tutor.prompts_dir)
        self.charts_dir = settings.home / "charts"
        # The running turn's progress callback; per context so concurrent turns never mix.
        self._status: contextvars.ContextVar[Callable[[str], None]] = contextvars.ContextVar(
            "mimir_turn_status", default=lambda text: None
        )
        self._control: contextvars.ContextVar[TurnControl | None] = contextvars.ContextVar(
            "mimir_turn_control", default=None
        )
        self.deciders = Deciders(
            self.prompts, manager, dict(settings.tutor.deciders), runner=self.runner, on_load=self._announce_load
        )
        worker = None
        if settings.tutor.math_check:
            worker = MathWorker(settings.tutor.math_timeout_s, settings.tutor.math_memory_mb * 1024 * 1024)
        self.math = MathStep(worker)

    def close(self) -> None:
        """Stop the math worker process."""
        if self.math.worker is not None:
            self.math.worker.close()

    # -- public API ----------------------------------------------------------------------
    def run_turn(
        self,
        message: str,
        session_id: str | None = None,
        *,
        on_token: Callable[[str], None] | None = None,
        on_status: Callable[[str], None] | None = None,
        history: Sequence[ChatMessage] | None = None,
        persist: bool = True,
        max_tokens: int | None = None,
        control: TurnControl | None = None,
    ) -> TurnResult:
        """Run one turn. ``on_token`` receives streamed response text; ``on_status`` short
        progress lines ("loading model 'default' (est. 352.0MiB)").

        ``history`` replaces the session's stored history, and ``persist=False`` stores no
        session or turn (both for ``mimir eval``); telemetry is recorded either way.
        ``max_tokens`` overrides ``[tutor] response_max_tokens`` for this turn. ``control``
        stops the turn (cancelled, or past its deadline) before the next step or token; the
        runner checks it at every token, so the model's slot and lease are free within one.

        If storing the finished turn fails, the answer is still returned, with a notice, and
        the turn goes to the spool (:mod:`mimir.storage.spool`) to be stored at the next start.
        Ctrl-C and ``SystemExit`` pass through unchanged (the turn is stored as failed first).
        """
        cleaned = clean_user_text(message)  # raises InvalidInputError before anything else
        if persist:
            session_id = self.store.ensure_session(session_id, cleaned.text)
        else:
            session_id = session_id or "eval"
        turn_id = new_id("t")
        work = _TurnWork(
            cleaned.text,
            # History from a caller (the API) gets the message's cleaning and caps.
            history=clean_history(history) if history is not None else None,
            max_tokens=max_tokens or self.tutor.response_max_tokens,
        )
        if cleaned.notice:
            work.notices.append(cleaned.notice)
        if self.math.worker is not None:
            self.math.worker.start()  # no-op when running; else sympy imports while the turn decides
        status_token = self._status.set(on_status or (lambda text: None))
        control_token = self._control.set(control)
        try:
            with self.telemetry.turn(session_id=session_id, turn_id=turn_id) as turn:
                self._run_steps(work, session_id, on_token or (lambda text: None))
        except BaseException as exc:
            interrupt = not isinstance(exc, Exception)  # Ctrl-C, SystemExit: never swallowed
            if isinstance(exc, MimirError):
                error = exc
            elif interrupt:
                error = GenerationError("pipeline", f"interrupted ({type(exc).__name__})")
            else:
                error = GenerationError("pipeline", f"{type(exc).__name__}: {exc}")
            if persist:
                self._store_safely(work, session_id, turn_id, error=error)
            self.telemetry.flush()
            if error is exc or interrupt:
                raise
            raise error from exc
        finally:
            self._status.reset(status_token)
            self._control.reset(control_token)
        record = turn.record
        if persist:
            self._store_safely(work, session_id, turn_id, record=record)
        return TurnResult(
            session_id=session_id,
            turn_id=turn_id,
            response=work.response,
            flags=tuple(work.state.active()),
            telemetry=record,
            chart_path=work.chart_path,
            chart_description=work.chart_description,
            notices=tuple(work.notices),
            tokens_in=work.tokens_in,
            tokens_out=work.tokens_out,
            finish_reason=work.finish_reason,
            verdict=work.math.verdict_name if work.math else None,
        )

    def _store_safely(self, work: _TurnWork, session_id: str, turn_id: str, *,
                      record: TurnRecord | None = None, error: MimirError | None = None) -> None:
        """Store the turn; if the database refuses (locked, full, read-only, gone), keep it in
        the spool instead and tell the student their answer was not saved yet."""
        fields = self._turn_fields(work, session_id, turn_id, record=record, error=error)
        try:
            self.store.add_turn(**fields)
        except Exception as exc:  # noqa: BLE001 - any storage failure: the answer must survive it
            log.warning("storing turn %s failed (%s); it goes to the spool", turn_id, exc)
            notice = ("This answer could not be saved right now (the database refused it); it is kept "
                      "and will be stored when Mimir next starts.")
            work.notices.append(notice)
            fields["notices"] = list(work.notices)
            try:
                self.spool.add_turn(fields, session_title=work.message, error=str(exc))
            except OSError as spool_exc:
                log.error("the spool cannot keep turn %s either: %s", turn_id, spool_exc)
            return
        math_record = work.math.record() if work.math is not None and not error else None
        if math_record is not None:  # the answer key and hints, for the follow-up
            try:
                self.store.add_math(turn_id, session_id, math_record)
            except Exception as exc:  # noqa: BLE001 - the turn is stored; only the key is lost
                log.warning("storing the math record of turn %s failed (%s)", turn_id, exc)

    def _turn_fields(self, work: _TurnWork, session_id: str, turn_id: str, *,
                     record: TurnRecord | None = None, error: MimirError | None = None) -> dict:
        """The stored turn: ``ok`` with its telemetry totals, or ``failed`` with the error."""
        return dict(
            turn_id=turn_id,
            session_id=session_id,
            user_message=work.message,
            response=work.response or (None if error else ""),
            status="failed" if error else "ok",
            error=str(error) if error else None,
            flags=work.state.active(),
            tool_output_path=work.chart_path,
            tool_description=work.chart_description,
            notices=list(work.notices),
            tokens_in=record.tokens_in if record else None,
            tokens_out=record.tokens_out if record else None,
            wall_s=record.wall_s if record else None,
        )

    def predict_flags(self, message: str, history: Sequence[ChatMessage] = ()) -> frozenset[Flag]:
        """The decision phase alone (what ``mimir eval --decisions-only`` checks)."""
        text = clean_user_text(message).text
        return self.deciders.decide(text, list(history)).flags

    # -- the steps -----------------------------------------------------------------------
    def _run_steps(self, work: _TurnWork, session_id: str, on_token: Callable[[str], None]) -> None:
        tel = self.telemetry
        self._check()
        if work.history is None:
            with tel.step("history", agent="storage"):
                work.history = self._history(session_id)
                work.pending = self.store.open_question(session_id) if self.math.enabled else None
        work.state.reset()
        self._decide(work)
        if self.math.enabled:
            with tel.step("math_check", agent="math"):
                self._math_check(work)
        if work.state.is_on(Flag.TOOL_USE_ENHANCEMENT):
            with tel.step("graph_tool", agent="tool") as step:
                self._graph_tool(work, step)
        if self.tutor.thinking:
            for name, flag, segment in THINKING_STEPS:
                if work.state.is_on(flag):
                    self._check()
                    self._think(work, name, segment)
        self._check()
        gate = self.math.gate(work.math, on_token)  # holds each sentence back until checked
        self._respond(work, gate.feed)
        gate.close()
        with tel.step("postprocess", agent="postprocess"):
            work.response = drop_echoes(clean_response(work.response, truncated=work.finish_reason == "length"),
                                        ECHOES)
        if self.math.enabled:
            with tel.step("math_claims", agent="math"):
                work.response, corrections = self.math.finish(work.math, work.response)
                if work.math is not None:
                    work.math.corrections = corrections

    def _math_check(self, work: _TurnWork) -> None:
        """The sympy engine on this turn; its verified facts go into the private notes."""
        state = work.state
        question = next((m.content for m in reversed(work.history or []) if m.role == "assistant"), None)
        work.math = self.math.analyze(
            work.message,
            question=question,
            pending=work.pending,
            wants_practice=state.is_on(Flag.STRUCTURE_PRACTICE_QUESTIONS) and state.is_on(Flag.MATH_THINKING),
            guiding=any(state.is_on(f) for f in (Flag.GUIDING_TEACHING, Flag.STRUCTURE_PRACTICE_QUESTIONS,
                                                 Flag.PRACTICE_QUESTION_FOLLOWUP)),
        )
        state.math_verdict = work.math.verdict_name if work.math else None
        notes = self.math.private_notes(work.math)
        if notes:
            work.thinking.insert(0, notes)

    def check_verdict(self, message: str, history: Sequence[ChatMessage] = ()) -> str:
        """The decision and math steps alone: the verdict on ``message`` as an answer to the
        last question in ``history`` (what ``mimir eval --quality`` checks for verdict cases)."""
        work = _TurnWork(clean_user_text(message).text, max_tokens=1, history=list(history))
        self._decide(work)
        self._math_check(work)
        return (work.math.verdict_name if work.math else None) or "unknown"

    def _history(self, session_id: str) -> list[ChatMessage]:
        turns = self.store.turns(session_id, limit=self.tutor.history_turns, only_ok=True)
        history: list[ChatMessage] = []
        for t in turns:
            history.append(ChatMessage("user", t.user_message))
            if t.response:
                history.append(ChatMessage("assistant", t.response))
        return clean_history(history)

    def _decide(self, work: _TurnWork) -> None:
        """Tool decision, rules and routing, ordered so the fewest models load."""
        tel = self.telemetry
        message, history = work.message, work.history
        results: dict[str, object] = {}

        def run_tool() -> None:
            with tel.step("tool_decision", agent="tool_decision", model=self.deciders.model_for("tool")) as step:
                decision, model_id = self.deciders.tool(message, history, step=step)
                step.set_model(model_id)
                results["tool"] = decision

        def run_routing() -> None:
            with tel.step("routing", agent="routing", model=self.deciders.model_for("routing")) as step:
                decision, model_id = self.deciders.routing(message, history, step=step)
                step.set_model(model_id)
                results["routing"] = decision

        following = []
        if self.tutor.thinking:
            following.append(self.manager.model_for_role("thinking"))
        following.append(self.manager.model_for_role("response"))
        resident = [r.model_id for r in sorted(self.manager.status().resident, key=lambda r: r.last_used)]
        order = order_steps(
            [("tool", self.deciders.model_for("tool")), ("routing", self.deciders.model_for("routing"))],
            resident=resident,
            then=following,
        )
        for name in order:
            (run_tool if name == "tool" else run_routing)()
        with tel.step("rules", agent="rules"):
            decided = outcome(message, history, results["tool"], results["routing"])  # type: ignore[arg-type]
            work.decisions = decided
            for flag in decided.flags:
                work.state.set(flag)

    def _repetition(self) -> dict[str, float]:
        """The tuned repetition controls ([tutor] repeat_penalty, presence_penalty, frequency_penalty)."""
        t = self.tutor
        return {"repeat_penalty": t.repeat_penalty, "presence_penalty": t.presence_penalty,
                "frequency_penalty": t.frequency_penalty}

    def _announce_load(self, event: LoadStarting) -> None:
        """The runner's "load starting" event, as a progress line for the turn's caller."""
        self._status.get()(f"loading model '{event.model_id}' (estimated {format_bytes(event.estimate_bytes)})")

    def _run_model(self, role: str, step, messages: list[ChatMessage], params: GenerationParams,
                   on_token: Callable[[str], None] | None = None):
        """One generation with the role's model, through the runner (the one door): lease,
        load event, out-of-memory policy, token accounting, and the turn's control checked at
        every token (a stopped generation frees its slot and lease within a token)."""
        forward = None if on_token is None else (lambda piece: on_token(strip_special_tokens(piece)))
        return self.runner.generate(
            self.manager.model_for_role(role), messages, params,
            on_token=forward, step=step, cancel=self._check, on_load=self._announce_load,
        )

    def _check(self) -> None:
        """Stop here if the running turn was cancelled or ran past its deadline."""
        control = self._control.get()
        if control is not None:
            control.check()

    def _graph_tool(self, work: _TurnWork, step) -> None:
        """A chart from the student's numbers; failing that, from data the model writes as
        JSON (written by the thinking model, which runs next anyway). No usable data: no
        chart, a logged reason, and the turn goes on."""
        from mimir.tutor import graph

        model_output = None
        if graph.find_chart_data(work.message) is None:
            messages = [
                ChatMessage("system", self.prompts.segment("chart_data")),
                ChatMessage("user", work.message),
            ]
            params = GenerationParams(max_tokens=96, temperature=0.0)
            model_output = self._run_model("thinking", step, messages, params).text
        chart = graph.make_chart(work.message, self.charts_dir, model_output=model_output)
        if not chart.ok:
            log.info("graph tool drew no chart: %s", chart.reason)
            return
        work.chart_path = str(chart.path)
        work.chart_description = chart.description

    def _think(self, work: _TurnWork, name: str, segment: str) -> None:
        with self.telemetry.step(name, agent="thinking") as step:
            # The response's prefix (identity, segments, history, message), then the
            # thinking instruction last: the response step reuses all of it but the end.
            messages = [*self._shared_prefix(work), ChatMessage("system", self.prompts.segment(segment))]
            params = GenerationParams(max_tokens=self.tutor.thinking_max_tokens, temperature=0.2, **self._repetition())
            completion = self._run_model("thinking", step, messages, params)
            text = clean_response(completion.text, truncated=completion.finish_reason == "length")
            if text:
                work.thinking.append(text)

    def _shared_prefix(self, work: _TurnWork) -> list[ChatMessage]:
        """What every model step of the turn sends first, most stable first: core identity
        and active segments (and the chart, once drawn), the history, the student's message."""
        system = self.prompts.system_prompt(work.state.active())
        if work.chart_description:
            system += f"\n\nA chart was drawn and shown to the student: {work.chart_description}"
        return [ChatMessage("system", system), *work.history, ChatMessage("user", work.message)]

    def assemble(self, work: _TurnWork) -> list[ChatMessage]:
        """The response prompt: the shared prefix, then the private thinking notes last."""
        messages = self._shared_prefix(work)
        if work.thinking:
            notes = "\n".join(work.thinking)
            messages.append(ChatMessage("system", f"{NOTES_HEADER}\n{notes}"))
        return messages

    def _respond(self, work: _TurnWork, on_token: Callable[[str], None]) -> None:
        with self.telemetry.step("response", agent="response") as step:
            params = GenerationParams(max_tokens=work.max_tokens, temperature=self.tutor.temperature,
                                      **self._repetition())
            completion = self._run_model("response", step, self.assemble(work), params, on_token=on_token)
            work.response = completion.text
            work.tokens_in, work.tokens_out = completion.tokens_in, completion.tokens_out
            work.finish_reason = completion.finish_reason
            if completion.truncated_input:
                work.notices.append("The conversation was too long for the model; older parts were left out.")
