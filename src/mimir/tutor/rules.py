"""Deterministic deciders: regular patterns that set the prompt-state flags without a model.

They are the default deciders for tiny models (the bundled 135M model cannot answer a yes/no
question reliably) and the first stage of the ``hybrid`` decider: every decision carries a
``confident`` bit, and only the unclear ones go to a model.

The patterns are general (kinds of requests, not particular messages); ``eval_cases.jsonl``
measures them. One function, :func:`flags_from_decisions`, maps decisions to flags.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from mimir.models.base import ChatMessage
from mimir.tutor.state import Flag

HistoryItem = ChatMessage | Mapping[str, str]


@dataclass(frozen=True)
class Decision:
    """One yes/no decision. ``confident=False`` marks a case a model should settle."""

    value: bool
    confident: bool
    reason: str


@dataclass(frozen=True)
class RoutingDecision:
    """The four routing questions, as five yes/no decisions."""

    practice_questions: Decision
    vague_input: Decision
    user_understanding: Decision
    practice_followup: Decision
    guiding_teaching: Decision

    def get(self, flag: Flag) -> Decision:
        return getattr(self, ROUTING_FIELDS[flag])

    def values(self) -> dict[Flag, bool]:
        return {flag: self.get(flag).value for flag in ROUTING_FIELDS}

    def unclear(self) -> frozenset[Flag]:
        """Flags whose rule was not confident (what a hybrid decider asks a model about)."""
        return frozenset(flag for flag in ROUTING_FIELDS if not self.get(flag).confident)

    def with_values(self, values: Mapping[Flag, bool], reason: str = "model") -> RoutingDecision:
        """A copy where the given flags take the given values (marked confident)."""
        changes = {
            ROUTING_FIELDS[flag]: Decision(bool(value), True, reason)
            for flag, value in values.items()
            if flag in ROUTING_FIELDS
        }
        return replace(self, **changes)


#: Routing flag -> field of :class:`RoutingDecision`.
ROUTING_FIELDS: dict[Flag, str] = {
    Flag.STRUCTURE_PRACTICE_QUESTIONS: "practice_questions",
    Flag.VAGUE_INPUT: "vague_input",
    Flag.USER_UNDERSTANDING: "user_understanding",
    Flag.PRACTICE_QUESTION_FOLLOWUP: "practice_followup",
    Flag.GUIDING_TEACHING: "guiding_teaching",
}


def _rx(pattern: str, flags: int = re.IGNORECASE) -> re.Pattern[str]:
    return re.compile(pattern, flags)


#: Rules read at most this many characters of a text: its first and last halves. Requests sit
#: at the start or end of a long paste, and a bounded input keeps every decision cheap.
MAX_RULE_CHARS = 2000


def bounded(text: str, limit: int = MAX_RULE_CHARS) -> str:
    """``text`` itself when short, else its first and last ``limit // 2`` characters."""
    if len(text) <= limit:
        return text
    half = limit // 2
    return text[:half] + "\n" + text[-half:]


def _norm(text: str) -> str:
    return bounded(text).replace("\u2019", "'").replace("\u2018", "'")


def _by_first_letter(words: str) -> str:
    """An alternation of words regrouped by first letter: ``a(?:lgebra|rea of)|c(?:os|alc)``.

    It matches exactly what the flat alternation matches (a search only asks whether some
    word fits at a position), but the engine, which tries alternatives one by one, tries ~20
    first letters at each word start instead of ~200 words. Alternatives are split at ``|``
    outside groups and classes; each must start with a plain letter."""
    alternatives, depth, start, i = [], 0, 0, 0
    while i < len(words):
        ch = words[i]
        if ch == "\\":
            i += 1
        elif ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif ch == "|" and depth == 0:
            alternatives.append(words[start:i])
            start = i + 1
        i += 1
    alternatives.append(words[start:])
    groups: dict[str, list[str]] = {}
    for alternative in alternatives:
        first = alternative[0].lower()
        if not first.isalpha() or alternative[1:2] in ("?", "*", "+", "{"):
            raise ValueError(f"an alternative must start with a plain letter: {alternative!r}")
        groups.setdefault(first, []).append(alternative[1:])
    return "|".join(f"{first}(?:{'|'.join(rest)})" for first, rest in groups.items())


# -- math ------------------------------------------------------------------------------------

_MATH_WORDS = _rx(
    r"\b(?:" + _by_first_letter(r"math|maths|mathematics|mathematical|arithmetic|algebra|algebraic|pre-?algebra|geometry|geometric"
    r"|calculus|pre-?calc(?:ulus)?|calc|trigonometry|trig|statistics|statistical|probability|probabilities"
    r"|equations?|inequalit(?:y|ies)|formulas?|formulae|solve|solving|calculate|calculating|calculations?"
    r"|compute|derivatives?|differentiate|differentiation|integrals?|integrate|integration|antiderivatives?"
    r"|limits? of|summation|sigma notation|sum of|taylor series|logarithms?|logarithmic|exponents?|exponential"
    r"|polynomials?|quadratics?|binomials?|linear function|slope|y-intercept|intercepts?|matrix|matrices"
    r"|vectors?|determinants?|theorems?|pythagorean|pythagoras|hypotenuse|triangles?|angles?|radius|diameter"
    r"|circumference|perimeter|area of|volume of|surface area|unit circle|sine|cosine|tangent|sin|cos|tan"
    r"|cot|sec|csc|fractions?|decimals?|percent|percentages?|ratios?|proportions?|numerator|denominator"
    r"|integers?|prime numbers?|prime factors?|factoring|factori[sz]e|factori[sz]ation|common factor"
    r"|common multiple|square roots?|cube roots?|multiply|multiplication|times tables?|divide|division"
    r"|subtract|subtraction|long division|order of operations|pemdas|standard deviation|variance|median"
    r"|average of|mean of|line of best fit|linear regression|permutations?|combinatorics|number line|place value|coefficients?") + r")\b"
)
_MATH_EXPR = [
    _rx(r"\d\s*[+*/×÷^=<>≤≥]\s*[\d(]"),  # 3 + 4, 2*5, 10 = 10
    _rx(r"\d\s+-\s+\d"),  # 10 - 3 (not year ranges like 1861-1865)
    re.compile(r"[a-z\d)]\s*\^\s*[\d({a-z]"),  # x^2
    re.compile(r"(?<![A-Za-z\d])\d+(?:\.\d+)?[xyzn](?![A-Za-z])"),  # 3x, 2y
    re.compile(r"(?<![A-Za-z])[a-z]\s*[=<>≤≥]\s*[-\d(a-z]"),  # x = 4, y < 3 (lower-case variable)
    re.compile(r"(?<![A-Za-z])[a-z]\s*[+\-*/]\s*\d*[a-z](?![A-Za-z])\s*[=+\-]"),  # 3x - y = ...
    re.compile(r"\b[fgh]\s*\(\s*[a-z0-9]"),  # f(x)
    re.compile(r"\\(?:frac|sqrt|int|sum|lim|sin|cos|tan|log|ln|cdot|times|pi|alpha|beta|theta)\b"),
    re.compile(r"\$[^$\n]+\$"),
    re.compile(r"[√∑∫π≤≥≠±×÷∞θ²³]"),
    _rx(r"\d\s*(?:times|plus|minus|divided by|multiplied by|squared|cubed|to the power)\b"),
    _rx(r"(?<!\d)\d+(?:\.\d+)?\s*%\s*of\s+\d"),
    _rx(r"\bwhat percent"),
]


def detect_math(text: str) -> bool:
    """Whether the text is about math: a math keyword, an equation or an arithmetic expression."""
    text = _norm(text)
    if _MATH_WORDS.search(text):
        return True
    return any(p.search(text) for p in _MATH_EXPR)


# -- shared word lists -----------------------------------------------------------------------

_STOP = set(
    """a an the i me my mine we us our you your he she it its they them their this that these those
    is am are was were be been being do does did doing have has had having can could would should
    will shall may might must of to in on at for with about from by as into onto over under and or
    but so if then than too very just really also not no yes yeah ok okay please pls thanks thank
    what which who whom whose when where why how there here some any all more most much many lot lots
    up out off again still now well oh hey hi hello yo sure right ever even only own same such
    im i'm i've i'll i'd it's that's what's don't dont doesn't didn't can't cant isn't aren't wasn't
    let let's get got getting go going gonna wanna want need like know think""".split()
)
#: Words that carry no topic of their own: requests, confusion, school in general.
_FILLER = set(
    """help helping explain explanation understand understanding idea clue clueless confused confusing
    lost stuck question questions answer answers problem problems thing things stuff something
    anything everything topic topics subject subjects homework assignment class classes school
    course test tests exam exams quiz teacher lesson work tomorrow today tonight week next soon later
    time tell show give make do say mean means meant start begin tutor tutoring learn learning study
    studying math maths science history english biology chemistry physics geography literature
    art music economics reading writing grammar vocabulary spanish french german language languages
    sense care bad good hard easy difficult simple basic basics kind sort way ways""".split()
)
_WORD = re.compile(r"[a-z0-9][a-z0-9'\-]*")


def _words(text: str) -> list[str]:
    return _WORD.findall(_norm(text).lower())


def _content_words(text: str) -> list[str]:
    return [
        w
        for w in _words(text)
        if w not in _STOP and w not in _FILLER and (len(w) >= 3 or any(c.isdigit() for c in w))
    ]


def _role_content(item: HistoryItem) -> tuple[str, str]:
    if isinstance(item, Mapping):
        return str(item.get("role", "user")), str(item.get("content", ""))
    return str(item.role), str(item.content)


def _last_assistant(history: Sequence[HistoryItem]) -> str | None:
    for item in reversed(list(history)):
        role, content = _role_content(item)
        if role == "assistant":
            return content
    return None


# -- tool decision ---------------------------------------------------------------------------

_CHART_NOUN = r"(?:charts?|graphs?|plots?|diagrams?|histograms?|visuali[sz]ations?|infographics?|pie|bar graph)"
_CHART_KIND = _rx(r"\b(?:bar|line|pie|column)\s*(?:charts?|graphs?|plots?)\b|\bhistograms?\b|\bpie\b")
_CHART_REQUEST = _rx(
    r"\b(?:make|draw|plot|create|generate|build|sketch|produce|render|show|give|display|add|include|turn)\b"
    r"[^.?!\n]{0,40}?\b" + _CHART_NOUN + r"\b"
    r"|\b(?:plot|graph|chart|visuali[sz]e|diagram)\s+(?:it|this|these|those|them|that|the|my|our|some|how|what|all)\b"
    r"|\b(?:can|could|would|will)\s+you\s+(?:please\s+)?(?:plot|graph|chart|visuali[sz]e)\b"
    r"|^\s*(?:please\s+)?(?:plot|graph|chart|visuali[sz]e)\b"
    r"|\bvisuali[sz]e\b"
)
_INTERPRET_GRAPHS = _rx(r"\b(?:interpret|read|reading|analy[sz]e|understand)\w*\b[^.?!\n]{0,40}?\b" + _CHART_NOUN)
_CHART_MENTION = _rx(r"\b" + _CHART_NOUN + r"\b")
#: A label next to a number: "Jan 10", "A=3", "math 85", "rent 40%".
_LABELLED_NUMBER = _rx(r"(?<![a-z'&.\-])\b[a-z][a-z'&.\-]*\s*(?:[:=]\s*)?\$?\d[\d,]*(?:\.\d+)?\s*%?(?=\s*(?:[,;\n)]|and\b|$))")
_NUMBER = re.compile(r"(?<![\w.])\d[\d,]*(?:\.\d+)?")


def _has_plot_data(message: str) -> bool:
    return len(_LABELLED_NUMBER.findall(message)) >= 3 or len(_NUMBER.findall(message)) >= 6


def tool_rules(message: str, history: Sequence[HistoryItem] = ()) -> Decision:
    """Does the answer need a chart? Yes for chart requests and for graph-reading practice."""
    text = _norm(message)
    practice = _wants_practice(text)
    if _CHART_REQUEST.search(text) or _CHART_KIND.search(text) and _has_plot_data(text):
        return Decision(True, True, "the student asks for a chart")
    if _INTERPRET_GRAPHS.search(text) and practice:
        return Decision(True, True, "graph-reading practice needs a chart to ask about")
    if _CHART_MENTION.search(text):
        return Decision(False, False, "a chart is mentioned but not requested")
    if _has_plot_data(text) and not detect_math(text):
        return Decision(False, False, "the message holds data that could be plotted")
    return Decision(False, True, "no chart requested")


# -- practice questions ----------------------------------------------------------------------

_PRACTICE = _rx(
    r"\bpractice\s+(?:questions?|problems?|exercises?|tests?|quiz(?:zes)?|exams?|sets?|items?)\b"
    r"|\b(?:quiz|test|drill)\s+me\b"
    r"|\b(?:give|send|make|create|write|generate|prepare|design|set)\s+(?:me\s+|us\s+)?"
    r"(?:a\s+|an\s+|some\s+|a\s+few\s+|few\s+|more\s+|\d+\s+|several\s+|two\s+|three\s+|five\s+|ten\s+)?"
    r"(?:short\s+|quick\s+|easy\s+|hard\s+|harder\s+|simple\s+|similar\s+|multiple[- ]choice\s+|practice\s+|sample\s+|review\s+|extra\s+|new\s+)*"
    r"(?:questions?|problems?|exercises?|quiz(?:zes)?|quizzes|worksheets?|flashcards?|drills?|mock\s+(?:test|exam)s?)\b"
    r"|\b(?:another|one\s+more|next)\s+(?:one|question|problem|exercise)\b"
    r"|\bmore\s+(?:questions|problems|exercises|practice)\b"
    r"|\b(?:questions|problems)\s+(?:for|to)\s+(?:me\s+)?(?:to\s+)?(?:practice|try|solve|work on)\b"
    r"|\b(?:can|could|may)\s+i\s+(?:get|have)\s+(?:another|more|some)\b"
)
_PRACTICE_NEG = _rx(r"\b(?:answers?|solutions?)\s+to\s+(?:my|the|this|these)\b")


def _wants_practice(text: str) -> bool:
    return bool(_PRACTICE.search(text)) and not _PRACTICE_NEG.search(text)


# -- understanding and vagueness ---------------------------------------------------------------

_CONFUSED = _rx(
    r"\b(?:do\s*n[o']?t|dont|do not|can't|cant|cannot|still\s+don't)\s+(?:really\s+|quite\s+|fully\s+)?"
    r"(?:understand|get|follow|see\s+why|grasp)\b"
    r"|\bconfus(?:ed|ing)\b|\blost\b|\bmakes?\s+no\s+sense\b|\b(?:does\s*n[o']?t|doesnt|does not)\s+make\s+sense\b"
    r"|\bno\s+(?:idea|clue)\b|\bclueless\b|\bstruggl\w*|\bhard\s+time\b|\bover\s+my\s+head\b"
    r"|\bnot\s+sure\s+(?:i\s+)?(?:understand|get|follow)\b|\bi'?m\s+(?:really\s+|so\s+)?bad\s+at\b"
    r"|\bi\s+(?:suck|am\s+terrible|'m\s+terrible)\s+at\b|\bnever\s+understood\b|\bbaffled\b|\bwhat\s+does\s+that\s+mean\b"
)
_BEGINNER = _rx(
    r"\bnew\s+to\b|\bbeginner\b|\bjust\s+start(?:ed|ing)\b|\bfrom\s+scratch\b"
    r"|\bwhere\s+(?:do|should|can)\s+i\s+(?:start|begin)\b|\bhow\s+(?:do|should)\s+i\s+(?:start|begin)\b"
    r"|\bnever\s+(?:learned|learnt|studied|taken|done|had)\b|\bfirst\s+time\b"
    r"|\bdon'?t\s+know\s+(?:anything|where\s+to\s+start|where\s+to\s+begin)\b"
    r"|\bstart(?:ing)?\s+(?:to\s+learn|learning)\b|\b(?:intro|introduction)\s+to\b"
)
_GREETING = _rx(r"^\s*(?:hi|hello|hey|yo|hiya|good\s+(?:morning|afternoon|evening))\b[\s!.,]*$")


def _understanding(text: str, followup: bool) -> Decision:
    if _CONFUSED.search(text):
        return Decision(True, True, "the student says they are confused")
    if _BEGINNER.search(text) and not followup:
        return Decision(True, True, "the student is starting the topic")
    return Decision(False, True, "no sign of confusion")


def _vagueness(text: str, has_context: bool) -> Decision:
    content = _content_words(text)
    if detect_math(text) and any(ch.isdigit() for ch in text) or _NUMBER.search(text) and has_context:
        return Decision(False, True, "the message has concrete content")
    if _GREETING.match(text):
        return Decision(True, True, "a greeting with no request")
    if has_context:
        if content:
            return Decision(False, True, "the message names its topic")
        return Decision(False, len(_words(text)) > 1, "short, but earlier messages give the topic")
    if not content:
        return Decision(True, True, "no topic beyond a school subject")
    if len(content) == 1 and len(_words(text)) <= 3:
        return Decision(False, False, "one topic word and little else")
    return Decision(False, True, "the message names its topic")


# -- follow-up to a practice question --------------------------------------------------------------

_ASKED_PRACTICE = _rx(
    r"\b(?:question|problem|exercise|q)\s*#?\d"
    r"|\btry\s+(?:this|these|it|one|the\s+following)\b|\byour\s+turn\b|\bgive\s+it\s+a\s+(?:try|go|shot)\b"
    r"|\bpractice\s+(?:question|problem)s?\b|\bsee\s+if\s+you\s+can\b|\bcheck\s+your\s+understanding\b"
    r"|\b(?:reply|respond)\s+with\s+your\b|\b(?:send|tell)\s+me\s+your\s+answers?\b|\byour\s+answers?\b"
    r"|\bwhat\s+(?:do|would)\s+you\s+get\b|\bcan\s+you\s+(?:solve|find|calculate|work\s+out|figure\s+out|identify|simplify|name)\b"
    r"|\bquick\s+(?:check|quiz|question)\b|\bhere\s+is\s+a\s+question\b"
)
_NUMBERED_QUESTION = re.compile(r"(?m)^[ \t]*(?:\d+[.)]|\(?[a-dA-D]\))[ \t]+\S.*$")
_ANSWER_LIKE = _rx(
    r"\bi\s+think\b|\bi\s+(?:got|get|have|put|said|chose|picked|wrote)\b|\bmy\s+answers?\b|\bthe\s+answer\s+is\b"
    r"|^\s*(?:is|was|would)\s+it\b|\bit'?s\b|\bit\s+is\b|\bi'?d\s+say\b|\bi\s+guess\b|\bmaybe\b|\bprobably\b"
    r"|\bnot\s+sure\b|\bno\s+idea\b|\bdon'?t\s+know\b|\bidk\b|\bis\s+that\s+(?:right|correct)\b|\bam\s+i\s+right\b"
    r"|\bdid\s+i\s+get\b|\b(?:for\s+)?(?:question|number|problem|q|no\.?)\s*#?\d|\bhints?\b|\btoo\s+(?:hard|easy)\b"
    r"|\b(?:first|second|third|last)\s+(?:one|question|problem)\b|\bthe\s+(?:answers?|solutions?)\b"
    r"|^\s*\(?[a-dA-D][).]?\s*$|\b(?:option|answer|choice)\s*:?\s*\(?[a-dA-D]\b|^\s*(?:true|false)\b"
)
_NEW_REQUEST = _rx(
    r"\b(?:now|next|instead|also|ignore\s+that|forget\s+that|different\s+topic|change\s+the\s+subject)\b"
    r"[^.?!\n]{0,30}?\b(?:explain|tell\s+me|what\s+is|what\s+are|teach|help\s+me|how\s+does|how\s+do|write|can\s+you)\b"
    r"|^\s*(?:ignore|forget)\s+(?:that|this|it)\b"
    r"|^\s*(?:thanks|thank\s+you|ok|okay|cool|great)\b[^.?!\n]*[.!,]\s*(?:now\s+)?(?:can|could|what|how|why|explain|tell|teach)\b"
)


def asked_practice_question(assistant_text: str | None) -> bool:
    """Whether a tutor message asked the student a practice question."""
    if not assistant_text:
        return False
    assistant_text = bounded(assistant_text)
    if _ASKED_PRACTICE.search(assistant_text):
        return True
    numbered = [m.group(0) for m in _NUMBERED_QUESTION.finditer(assistant_text)]
    return sum("?" in line for line in numbered) >= 1 and len(numbered) >= 2


def _followup(text: str, history: Sequence[HistoryItem]) -> Decision:
    last = _last_assistant(history)
    if not asked_practice_question(last):
        return Decision(False, True, "the tutor did not ask a practice question last")
    if _NEW_REQUEST.search(text):
        return Decision(False, True, "the student moves to a new request")
    words = _words(text)
    if _ANSWER_LIKE.search(text) or _NUMBER.search(text) and len(words) <= 25:
        return Decision(True, True, "an answer to the tutor's practice question")
    if detect_math(text) and len(words) <= 12:
        return Decision(True, True, "a math answer to the tutor's practice question")
    if len(words) <= 8:
        return Decision(True, False, "a short reply to the tutor's practice question")
    return Decision(False, False, "a long message after a practice question")


# -- guided teaching -----------------------------------------------------------------------------

_GUIDING = _rx(
    r"^\s*(?:please\s+)?(?:solve|answer|find|calculate|compute|simplify|evaluate|factor|factori[sz]e|prove|show\s+that"
    r"|derive|integrate|differentiate|expand|convert|balance|translate|write|finish|complete|do|fix|proofread)\b"
    r"|\b(?:can|could|would|will)\s+you\s+(?:please\s+)?(?:just\s+)?(?:solve|answer|do|write|finish|complete|find|calculate|compute"
    r"|simplify|evaluate|factor|prove|balance|translate|fix|proofread|check)\b"
    r"|\b(?:do|write|finish|complete|answer|solve)\s+(?:my|our|this|these|the\s+following)\b"
    r"|\bhow\s+(?:do|can|should|would|could)\s+(?:i|we|you|one)\b|^\s*how\s+to\b"
    r"|\b(?:learn|know|understand|understanding|show\s+me|teach\s+me|explain|figure\s+out|tell\s+me|wondering|idea)\s+how\s+to\b"
    r"|\bstep[- ]by[- ]step\b|\bwalk\s+me\s+through\b|\bteach\s+me\b|\bshow\s+me\s+how\b|\bguide\s+me\b"
    r"|\bhelp\s+me\s+(?:to\s+)?(?:understand|learn|with|solve|study|prepare|review|write|figure|get\s+better|improve|practice|finish|do)\b"
    r"|\bhelp\s+(?:with\s+)?(?:studying|preparing|reviewing|understanding)\b"
    r"|\b(?:study|studying|prepare|preparing|prep|review|reviewing|cram|cramming)\s+for\b"
    r"|\bi\s+need\s+to\s+(?:write|solve|finish|learn|study|prepare|understand|pass)\b"
    r"|\bmy\s+(?:homework|assignment|essay|worksheet|project|lab\s+report|paper|problem\s+set)\b"
    r"|\bwhat'?s\s+the\s+answer\b|\bwhat\s+is\s+the\s+answer\b|\bgive\s+me\s+the\s+(?:answers?|solutions?)\b"
)
_QUESTION_START = _rx(r"^\s*(?:what|why|who|whom|when|where|which|is|are|does|do|did|was|were|can|could)\b")


def _guiding(text: str) -> Decision:
    if _GUIDING.search(text):
        return Decision(True, True, "the student wants help doing a task or learning a method")
    if _QUESTION_START.search(text):
        return Decision(False, True, "a direct question about a concept or fact")
    return Decision(False, False, "no task or learning request found")


def routing_rules(message: str, history: Sequence[HistoryItem] = ()) -> RoutingDecision:
    """The four routing questions answered by patterns."""
    text = _norm(message)
    followup = _followup(text, history)
    has_context = _last_assistant(history) is not None
    practice = _wants_practice(text)
    return RoutingDecision(
        practice_questions=Decision(
            practice,
            True,
            "the student asks for practice questions" if practice else "no request for practice questions",
        ),
        vague_input=_vagueness(text, has_context),
        user_understanding=_understanding(text, followup.value),
        practice_followup=followup,
        guiding_teaching=_guiding(text),
    )


def turn_has_math(message: str, history: Sequence[HistoryItem], routing: RoutingDecision | None = None) -> bool:
    """Math in the message, or a reply without its own topic (an answer to a practice
    question, "I don't get it") to a tutor message about math."""
    if detect_math(message):
        return True
    last = _last_assistant(history)
    if last is None or not detect_math(last):
        return False
    if routing is not None and routing.practice_followup.value:
        return True
    return not _content_words(message)


def flags_from_decisions(tool: bool | Decision, math: bool, routing: RoutingDecision) -> frozenset[Flag]:
    """The one place that maps decisions to prompt-state flags."""
    tool_on = tool.value if isinstance(tool, Decision) else bool(tool)
    values = routing.values()
    flags: set[Flag] = {Flag.GENERAL_FORMATTING}
    flags.update(flag for flag, on in values.items() if on)
    if math:
        flags.update({Flag.LATEX_FORMATTING, Flag.MATH_THINKING})
    if values[Flag.STRUCTURE_PRACTICE_QUESTIONS]:
        flags.add(Flag.QUESTION_ANSWER_DESIGN)
    if tool_on:
        flags.add(Flag.TOOL_USE_ENHANCEMENT)
    if tool_on or values[Flag.PRACTICE_QUESTION_FOLLOWUP] or values[Flag.GUIDING_TEACHING]:
        flags.add(Flag.REASONING_THINKING)
    return frozenset(flags)


def decide_flags(message: str, history: Sequence[HistoryItem] = ()) -> frozenset[Flag]:
    """Every flag of a turn decided by rules alone (the default configuration)."""
    routing = routing_rules(message, history)
    tool = tool_rules(message, history)
    return flags_from_decisions(tool, turn_has_math(message, history, routing), routing)
