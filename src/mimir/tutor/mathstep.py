"""The math step of a turn: what the pipeline asks the math engine, and what it does with it.

- :meth:`MathStep.analyze` (step ``math_check``): one worker call with the message, the
  question being answered (a stored practice question, else the tutor's last message) and
  the flags. It returns :class:`MathNotes`: the verdict on the student's answer, the answer
  key of the problem under discussion, a practice question with its key, or the next hint.
- :meth:`MathStep.private_notes`: what goes into the response model's private notes.
  Under guided teaching or practice the notes carry the method and the next hint, never the
  final answer, so the model has nothing to leak.
- :class:`ClaimGate`: streamed prose passes token by token; from the first digit, ``=`` or
  math sign of a sentence, the rest of the sentence is held back until it ends, checked (and
  corrected), then emitted. The verdict line goes out first,
  the practice question and the correction notes last.
- :meth:`MathStep.finish` (step ``math_claims``): the same check on the final cleaned text
  before it is stored.

An engine that times out or fails says "could not check" in the log and the turn goes on.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mimir.mathcheck.worker import CouldNotCheck, MathWorker
from mimir.tutor.postprocess import echo_pattern

log = logging.getLogger(__name__)

#: A sentence ends at . ! ? followed by a space, or at a newline.
_SENTENCE_END = re.compile(r"[.!?](?=\s)|\n")
#: Text worth a worker call: an "=" or a prose claim ("the average of 82 and 91 is 82").
_CLAIM_HINT = re.compile(r"=|\b(?:average|mean|sum|percent|plus|minus|times|divided)\b|%", re.I)
#: What starts holding a sentence back: a digit, "=", "$" or a LaTeX backslash.
_TRIGGER = re.compile(r"[0-9=$\\]")
#: Never hold back more than this many characters (a sentence that never ends).
MAX_HELD_CHARS = 600


#: The instructions the private notes give the response model. A small model sometimes copies
#: them into its answer; the pipeline drops sentences that begin like one of these
#: (:func:`mimir.tutor.postprocess.drop_echoes`), so a student never reads them. (Content meant
#: for the student, the hint and the practice question, is not among them.)
CHECKED = "Checked by the math engine:"
CONFIRM = "Confirm it briefly and praise the method."
POINT_AT_MISTAKE = "Say which part is wrong and give one hint; do not give the full solution."
HINT_ASKED = "The student asked for a hint. Give exactly this hint and nothing more:"
ASK_PRACTICE = "Ask the student this practice question, exactly as written, and do not answer it:"
GUIDE = "Guide the student one step at a time; do not state the final answer."
NOTES_HEADER = "Private notes for the tutor (never quote them):"
INSTRUCTIONS = (CHECKED, CONFIRM, POINT_AT_MISTAKE, HINT_ASKED, "Give exactly this hint and nothing more:",
                ASK_PRACTICE, GUIDE, NOTES_HEADER)
#: Where a reply sentence opens like one of them.
ECHOES = echo_pattern(INSTRUCTIONS)


@dataclass
class MathNotes:
    """What the math step found for one turn (JSON-able parts come from the worker)."""

    verdict: dict[str, Any] | None = None
    key: dict[str, Any] | None = None
    source: str | None = None
    practice: dict[str, Any] | None = None
    hint: str | None = None
    hints_given: int = 0
    question: str | None = None
    skill: str | None = None
    guiding: bool = False
    could_not_check: str | None = None
    corrections: list[str] = field(default_factory=list)

    @property
    def verdict_name(self) -> str | None:
        return self.verdict["verdict"] if self.verdict else None

    def solutions(self) -> list[dict[str, str]]:
        if self.key and self.key.get("kind") == "solutions":
            return list(self.key.get("solutions") or [])
        return []

    def record(self) -> dict[str, Any] | None:
        """What is stored with the turn (``None``: nothing to store)."""
        open_key, question, hints_given = self.key, self.question, self.hints_given
        if self.practice is not None:
            open_key, question, hints_given = self.practice["key"], self.practice["question"], 0
        elif self.verdict_name == "correct":
            open_key = None
        if open_key is None and self.verdict is None:
            return None
        return {
            "skill": self.skill,
            "source": "practice" if self.practice is not None else self.source,
            "question": question or (open_key or {}).get("statement"),
            "key": open_key,
            "hints_given": hints_given,
            "verdict": self.verdict_name,
            "verdict_detail": (self.verdict or {}).get("detail"),
            "open": open_key is not None,
        }


class MathStep:
    def __init__(self, worker: MathWorker | None):
        self.worker = worker

    @property
    def enabled(self) -> bool:
        return self.worker is not None

    # -- the math_check step ---------------------------------------------------------------------
    def analyze(self, message: str, *, question: str | None, pending: dict | None, wants_practice: bool,
                guiding: bool, seed: int | None = None) -> MathNotes | None:
        if self.worker is None:
            return None
        request = {
            "message": message,
            "question": question,
            "pending": pending,
            "wants_practice": wants_practice,
            "guiding": guiding,
            "seed": seed,
        }
        try:
            out = self.worker.call("analyze", request)
        except CouldNotCheck as exc:
            log.info("math_check: could not check (%s); the turn goes on", exc)
            return MathNotes(could_not_check=str(exc), guiding=guiding)
        return MathNotes(
            verdict=out.get("verdict"),
            key=out.get("key"),
            source=out.get("source"),
            practice=out.get("practice"),
            hint=out.get("hint"),
            hints_given=int(out.get("hints_given") or 0),
            question=out.get("question"),
            skill=out.get("skill"),
            guiding=guiding,
        )

    @staticmethod
    def private_notes(notes: MathNotes | None) -> str:
        """Verified facts for the response model, in plain words."""
        if notes is None or notes.could_not_check:
            return ""
        lines: list[str] = []
        verdict = notes.verdict_name
        if notes.hint:
            lines.append(f"{HINT_ASKED} {notes.hint}")
        elif verdict == "correct":
            lines.append(f"{CHECKED} the student's answer is correct. {CONFIRM}")
        elif verdict == "incorrect":
            detail = notes.verdict.get("detail", "")
            lines.append(f"{CHECKED} the student's answer is not correct ({detail}). {POINT_AT_MISTAKE}")
            hints = (notes.key or {}).get("hints") or []
            if hints:
                lines.append(f"A useful hint: {hints[0]}")
        if notes.practice is not None:
            lines.append(f"{ASK_PRACTICE} {notes.practice['question']}")
        elif notes.key is not None and verdict is None and not notes.hint:
            hints = notes.key.get("hints") or []
            if notes.guiding:
                if hints:
                    lines.append(f"Verified first step for the student: {hints[0]} {GUIDE}")
            else:
                lines.append(f"Verified by the math engine: {notes.key.get('statement')}: the answer is {_answer_text(notes.key)}. Use exactly this result.")
        return "\n".join(lines)

    @staticmethod
    def lead(notes: MathNotes | None) -> str:
        """The visible line that opens the answer: the checked verdict or the hint."""
        if notes is None or notes.could_not_check:
            return ""
        if notes.hint:
            return f"**Hint {notes.hints_given}:** {notes.hint}\n\n"
        if notes.verdict_name == "correct":
            return "**Checked:** your answer is correct.\n\n"
        if notes.verdict_name == "incorrect":
            return f"**Checked:** not quite: {notes.verdict.get('detail', 'something is off')}.\n\n"
        return ""

    @staticmethod
    def tail(notes: MathNotes | None) -> str:
        if notes is None or notes.practice is None:
            return ""
        return f"\n\n**Practice question:** {notes.practice['question']}"

    # -- claims --------------------------------------------------------------------------------
    def check_text(self, text: str, notes: MathNotes | None) -> tuple[str, list[str]]:
        """``text`` with its false equalities corrected, and what was corrected."""
        if self.worker is None or not _CLAIM_HINT.search(text):
            return text, []
        request: dict[str, Any] = {"text": text, "solutions": notes.solutions() if notes else [],
                                   "key": notes.key if notes else None}
        if notes is not None and notes.guiding and notes.verdict_name != "correct":
            request["hide"] = notes.solutions()
        try:
            out = self.worker.call("claims", request)
        except CouldNotCheck as exc:
            log.info("math_claims: could not check (%s)", exc)
            return text, []
        return out["text"], list(out["corrections"])

    def count_false(self, text: str, message: str = "", question: str | None = None) -> int:
        """False equalities in ``text`` (steps judged against the solution of the problem in
        ``message`` or ``question``). Raises :class:`CouldNotCheck`."""
        if self.worker is None:
            raise CouldNotCheck("the math engine is switched off ([tutor] math_check = false)")
        return int(self.worker.call("audit", {"text": text, "message": message, "question": question})["false"])

    def gate(self, notes: MathNotes | None, on_token: Callable[[str], None]) -> ClaimGate:
        return ClaimGate(self, notes, on_token)

    def finish(self, notes: MathNotes | None, response: str) -> tuple[str, list[str]]:
        """The final answer: verdict line, checked text, practice question, correction note."""
        text, corrections = self.check_text(response, notes)
        return self.lead(notes) + text + self.tail(notes) + correction_note(corrections), corrections


def correction_note(corrections: list[str]) -> str:
    """One visible line listing what the math check changed: values put right, and steps
    struck through because they do not hold for the problem's solution."""
    if not corrections:
        return ""
    unique = list(dict.fromkeys(corrections))
    values = [c for c in unique if not c.startswith("step: ")]
    steps = [c[len("step: "):] for c in unique if c.startswith("step: ")]
    parts = []
    if values:
        parts.append("I corrected " + "; ".join(values) + ".")
    if steps:
        parts.append("These steps do not hold for this problem and are struck through: "
                     + "; ".join(f"~~{step}~~" for step in steps) + ".")
    return "\n\n_Math check: " + " ".join(parts) + "_"


def _answer_text(key: dict) -> str:
    if key.get("kind") == "value":
        return key.get("value", "") + (" + C" if key.get("form") == "antiderivative" else "")
    sols = key.get("solutions") or []
    names = key.get("variables") or []
    return " or ".join(", ".join(f"{v} = {s[v]}" for v in names if v in s) for s in sols) or "no solution"


class ClaimGate:
    """Streams text through, holding back only what could be a claim.

    Prose streams token by token. From the first digit, ``=``, ``$`` or backslash of a
    sentence on, the rest of that sentence is held until the sentence ends (or
    :data:`MAX_HELD_CHARS` pile up); the whole sentence is then checked and the held part is
    emitted, corrected. Equalities start at a number or a variable next to one, so a
    correction lands in the held part; the note at the end lists every correction.
    """

    def __init__(self, step: MathStep, notes: MathNotes | None, emit: Callable[[str], None]):
        self.step = step
        self.notes = notes
        self.emit = emit
        self.sent = ""  # the current sentence's text already emitted
        self.held = ""  # the current sentence's text held back
        self.corrections: list[str] = []
        self.active = step.enabled
        lead = step.lead(notes)
        if lead:
            emit(lead)

    def feed(self, piece: str) -> None:
        if not self.active:
            self.emit(piece)
            return
        while piece:
            if not self.held:
                trigger = _TRIGGER.search(piece)
                stop = trigger.start() if trigger else len(piece)
                free = piece[:stop]
                end = _last_sentence_end(free)
                self.emit(free)
                self.sent = (self.sent + free)[-MAX_HELD_CHARS:] if not end else free[end:]
                if not trigger:
                    return
                self.held, piece = piece[stop:stop + 1], piece[stop + 1 :]
                continue
            self.held += piece
            piece = ""
            cut = _last_sentence_end(self.held)
            if cut <= 0 and len(self.held) > MAX_HELD_CHARS:
                cut = len(self.held)
            if cut > 0:
                ready, rest = self.held[:cut], self.held[cut:]
                self.held = ""
                self._release(ready)
                self.sent = ""
                piece = rest

    def _release(self, held: str) -> None:
        full = self.sent + held
        checked, corrections = self.step.check_text(full, self.notes)
        self.corrections.extend(corrections)
        if checked.startswith(self.sent):
            self.emit(checked[len(self.sent) :])
        else:  # a correction reached into text already sent: send the held part on its own
            self.emit(self.step.check_text(held, self.notes)[0])

    def close(self) -> None:
        if self.held:
            self._release(self.held)
            self.held = ""
        tail = self.step.tail(self.notes) + correction_note(self.corrections)
        if tail:
            self.emit(tail)


def _last_sentence_end(text: str) -> int:
    """Index just after the last complete sentence outside ``$...$`` math, or 0."""
    if text.count("$") % 2:
        text = text[: text.rfind("$")]
    last = 0
    for m in _SENTENCE_END.finditer(text):
        last = m.end()
    return last
