"""Deciders for the tool and routing decisions: ``rules``, ``model`` or ``hybrid``.

- ``rules``: patterns only (``mimir.tutor.rules``); no model is used.
- ``model``: the role's model answers each decision prompt as a constrained choice: the
  allowed answers are scored by log-probability (``LoadedModel.score_choices``); free text is
  never parsed. The four routing questions share one prompt prefix (system message and
  conversation), so a backend with a KV cache evaluates it once and each question costs only
  its own tokens: one pass, not four generations.
- ``hybrid``: the rules decide what they are confident about; the model only the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mimir.models.base import ChatMessage
from mimir.runtime.manager import ModelManager
from mimir.runtime.runner import LoadStarting, Runner, RunnerSession
from mimir.tutor import rules
from mimir.tutor.prompts import ROUTING_DECISIONS, TOOL_DECISION, PromptLibrary
from mimir.tutor.rules import Decision, RoutingDecision
from mimir.tutor.state import Flag

#: Which role's model answers each decision.
DECISION_ROLES = {"tool": "tool_decision", "routing": "routing"}


@dataclass(frozen=True)
class DecisionOutcome:
    tool: Decision
    routing: RoutingDecision
    math: bool
    flags: frozenset[Flag]
    #: Model ids that were asked (empty with the rules decider).
    models_used: tuple[str, ...] = ()


class Deciders:
    def __init__(
        self,
        prompts: PromptLibrary,
        manager: ModelManager,
        deciders: dict[str, str],
        *,
        runner: Runner | None = None,
        on_load: Callable[[LoadStarting], None] | None = None,
    ):
        self.prompts = prompts
        self.manager = manager
        self.runner = runner or Runner(manager)
        self.deciders = dict(deciders)
        self._on_load = on_load

    def model_for(self, decision: str) -> str | None:
        """The model a decision *may* use (None for the rules decider)."""
        if self.deciders.get(decision, "rules") == "rules":
            return None
        return self.manager.model_for_role(DECISION_ROLES[decision])

    def _with_model(self, decision: str, ask: Callable[[RunnerSession], object], step=None):
        """Run ``ask`` on the decision's model under one lease, through the runner."""
        model_id = self.manager.model_for_role(DECISION_ROLES[decision])
        with self.runner.session(model_id, step=step, on_load=self._on_load) as session:
            return ask(session), model_id

    def tool(self, message: str, history: Sequence[ChatMessage], step=None) -> tuple[Decision, str | None]:
        kind = self.deciders.get("tool", "rules")
        ruled = rules.tool_rules(message, history)
        if kind == "rules" or (kind == "hybrid" and ruled.confident):
            return ruled, None
        prompt = self.prompts.decision(TOOL_DECISION)

        def ask(session: RunnerSession) -> Decision:
            scores = session.score(prompt.messages(message, history), prompt.choices)
            choice = prompt.pick(scores)
            value = bool(prompt.outcomes[choice].get(Flag.TOOL_USE_ENHANCEMENT, False))
            return Decision(value, True, f"model answered {choice!r}")

        decision, model_id = self._with_model("tool", ask, step)
        return decision, model_id

    def routing(
        self, message: str, history: Sequence[ChatMessage], step=None
    ) -> tuple[RoutingDecision, str | None]:
        kind = self.deciders.get("routing", "rules")
        ruled = rules.routing_rules(message, history)
        if kind == "rules":
            return ruled, None
        wanted = [
            name
            for name in ROUTING_DECISIONS
            if kind == "model" or (self.prompts.decision(name).flags & ruled.unclear())
        ]
        if not wanted:
            return ruled, None

        def ask(session: RunnerSession) -> dict[Flag, bool]:
            values: dict[Flag, bool] = {}
            for name in wanted:
                prompt = self.prompts.decision(name)
                scores = session.score(prompt.messages(message, history), prompt.choices)
                outcome = prompt.outcome(scores)
                if kind == "hybrid":  # the model settles only what the rules left open
                    outcome = {f: v for f, v in outcome.items() if f in ruled.unclear()}
                values.update(outcome)
            return values

        values, model_id = self._with_model("routing", ask, step)
        return ruled.with_values(values, reason="model"), model_id

    def decide(self, message: str, history: Sequence[ChatMessage]) -> DecisionOutcome:
        """Every decision of a turn, without telemetry (the pipeline wraps each in a step)."""
        tool, tool_model = self.tool(message, history)
        routing, routing_model = self.routing(message, history)
        return outcome(message, history, tool, routing, tuple(m for m in (tool_model, routing_model) if m))


def outcome(
    message: str,
    history: Sequence[ChatMessage],
    tool: Decision,
    routing: RoutingDecision,
    models_used: tuple[str, ...] = (),
) -> DecisionOutcome:
    math = rules.turn_has_math(message, history, routing)
    return DecisionOutcome(
        tool=tool,
        routing=routing,
        math=math,
        flags=rules.flags_from_decisions(tool, math, routing),
        models_used=models_used,
    )
