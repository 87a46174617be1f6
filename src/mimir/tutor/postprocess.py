"""Cleaning a model's reply before it is shown and stored.

In order: chat-template tokens go (the reply ends at the first end-of-turn token, since
whatever follows is the model writing another turn), role markers at line starts go (a
"User:" line after some text starts an invented student turn and ends the reply), repeated
sentences and lines are dropped, word loops ("and then and then and then") collapse, and, when
generation stopped at the token limit, the cut-off last sentence is trimmed.

LaTeX spans (``$...$``, ``$$...$$``, ``\\[...\\]``, ``\\(...\\)``, environments, bare
``\\frac{..}{..}``) are set aside first, so periods inside them never split a sentence and
their content is never changed.
"""

from __future__ import annotations

import re

from mimir.tutor.text import TRAILING_SPACE

_START_MARKERS = re.compile(
    r"^\s*(?:<\|im_start\|>\s*assistant\b\s*|<\|start_header_id\|>\s*assistant\s*<\|end_header_id\|>\s*"
    r"|<start_of_turn>\s*model\b\s*|<s>\s*|\[/INST\]\s*|<\|assistant\|>\s*|<\|begin_of_text\|>\s*)+"
)
_END_MARKERS = re.compile(
    r"<\|(?:im_end|eot_id|endoftext|end|eom_id|end_of_text|user|system)\|>|</s>|<end_of_turn>|\[INST\]"
    r"|<\|im_start\|>|<\|start_header_id\|>|<start_of_turn>|<<SYS>>"
)
_ANY_SPECIAL = re.compile(r"<\|[A-Za-z0-9_]{1,40}\|>|</?s>|\[/?INST\]|<</?SYS>>|<(?:start|end)_of_turn>")
_OWN_ROLE = re.compile(r"^(\s*)(?:#{1,4}\s*)?(?:assistant|tutor|mimir|ai|bot|response|answer)\s*:\s*", re.I)
_OTHER_ROLE = re.compile(r"^\s*(?:#{1,4}\s*)?(?:user|student|human|system|instruction)\s*:", re.I)

#: A span's body never holds another opener of its kind, so an opener that is never closed is
#: scanned only up to the next opener: linear time even on "\\[" repeated 50,000 times.
_LATEX = re.compile(
    r"\$\$(?:(?!\$\$).)+?\$\$"
    r"|\\\[(?:(?!\\\[).)+?\\\]"
    r"|\\\((?:(?!\\\().)+?\\\)"
    r"|\\begin\{([A-Za-z*]{1,30})\}(?:(?!\\begin\{).)+?\\end\{\1\}"
    r"|(?<![\\$])\$(?!\s)[^$\n]+?(?<![\s\\])\$(?!\d)"
    r"|\\[A-Za-z]+(?:\{[^{}\n]*\})+",
    re.S,
)
_HOLE = "\x00{}\x00"
_HOLE_RX = re.compile("\x00(\\d+)\x00")

_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+(?=\S)")
_LIST_MARKER = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)]|[a-z][.)])\s+", re.I)
_SENTENCE_END = re.compile(r"[.!?][\"')\]*_]*(?=\s|$)")
#: Sentences shorter than this (normalised characters) may repeat ("Yes.", "Step 1.").
_MIN_DEDUP_CHARS = 12
_MAX_LOOP_WORDS = 30
#: Near duplicates: sentences of at least this many words whose word sets overlap this much
#: (Jaccard) with one of the last ``_NEAR_DUP_WINDOW`` kept sentences. The window bounds the
#: work per sentence, so the whole pass stays linear in the text.
_NEAR_DUP_MIN_WORDS = 5
_NEAR_DUP_JACCARD = 0.75
_NEAR_DUP_WINDOW = 16
_KEY_WORD = re.compile(r"[a-z0-9]+")


def strip_special_tokens(text: str) -> str:
    """Opening assistant markers removed; the reply ends at the first end-of-turn marker."""
    text = _START_MARKERS.sub("", text)
    end = _END_MARKERS.search(text)
    if end:
        text = text[: end.start()]
    return _ANY_SPECIAL.sub("", text)


def strip_role_markers(text: str) -> str:
    lines = text.split("\n")
    out: list[str] = []
    has_text = False
    for line in lines:
        if ":" not in line:  # both role patterns end with a colon: most lines skip them
            out.append(line)
            has_text = has_text or not (not line or line.isspace())
            continue
        if _OTHER_ROLE.match(line):
            if has_text:
                break  # the model started writing the student's next turn
            line = _OTHER_ROLE.sub("", line, count=1)
        line = _OWN_ROLE.sub(r"\1", line, count=1)
        out.append(line)
        has_text = has_text or bool(line.strip())
    return "\n".join(out)


def _protect_latex(text: str) -> tuple[str, list[str]]:
    spans: list[str] = []
    index: dict[str, int] = {}

    def hold(match: re.Match[str]) -> str:
        span = match.group(0)
        if span not in index:
            index[span] = len(spans)
            spans.append(span)
        return _HOLE.format(index[span])

    return _LATEX.sub(hold, text), spans


def _restore_latex(text: str, spans: list[str]) -> str:
    return _HOLE_RX.sub(lambda m: spans[int(m.group(1))], text)


_MARKUP = re.compile(r"[*_#`>]+")
_SPACES = re.compile(r"\s+")
_ONLY_MATH = re.compile(r"(?:<math\d+>\s*)+")


def _math_marker(match: re.Match[str]) -> str:
    return f"<math{match.group(1)}>"


def _sentence_key(sentence: str) -> str:
    key = _LIST_MARKER.sub("", sentence)
    key = _MARKUP.sub("", key).lower()
    key = _SPACES.sub(" ", key).strip(" .!?;:,")
    return key


def _token_key(word: str) -> str:
    return word.lower().strip(".,;:!?\"'()*")


def collapse_loops(words: list[str]) -> list[str]:
    """Collapse a word sequence repeated back to back: 3+ copies for 1-3 words, 2+ copies
    for longer sequences (up to 30 words)."""
    keys = [_token_key(w) for w in words]
    i = 0
    while i < len(words):
        collapsed = False
        first = keys[i]
        # A pattern of bare punctuation never collapses: it must reach a word with a key.
        keyed = i
        while keyed < len(keys) and not keys[keyed]:
            keyed += 1
        if keyed - i >= _MAX_LOOP_WORDS:  # no window starting before keyed - 29 can reach it
            i = keyed - _MAX_LOOP_WORDS + 1
            continue
        for n in range(max(1, keyed - i + 1), min(_MAX_LOOP_WORDS, (len(words) - i) // 2) + 1):
            if keys[i + n] != first:
                continue  # cheap test first: a repeat starts with the same word
            pattern = keys[i : i + n]
            reps = 1
            while keys[i + reps * n : i + (reps + 1) * n] == pattern:
                reps += 1
            if reps >= (3 if n < 4 else 2):
                del words[i + n : i + reps * n]
                del keys[i + n : i + reps * n]
                collapsed = True
                break
        if not collapsed:
            i += 1
    return words


def _collapse_line_loops(line: str) -> str:
    indent = line[: len(line) - len(line.lstrip())]
    words = line.split()
    if len(words) < 3:
        return line
    collapsed = collapse_loops(list(words))
    return line if collapsed == words else indent + " ".join(collapsed)


class _SeenSentences:
    """Sentences kept so far: exact keys, and word sets of the recent ones for near duplicates."""

    def __init__(self) -> None:
        self.keys: set[str] = set()
        self.recent: list[frozenset[str]] = []

    def repeats(self, key: str) -> bool:
        """Whether ``key`` repeats a kept sentence (exactly or nearly); remembers it if not."""
        if key in self.keys:
            return True
        words = _KEY_WORD.findall(key)
        bag = frozenset(words)
        if len(words) >= _NEAR_DUP_MIN_WORDS:
            size = len(bag)
            for other in self.recent:
                # Jaccard <= min/max of the sizes: most pairs are ruled out without a set operation.
                if min(size, len(other)) < _NEAR_DUP_JACCARD * max(size, len(other)):
                    continue
                if len(bag & other) >= _NEAR_DUP_JACCARD * len(bag | other):
                    return True
            self.recent.append(bag)
            if len(self.recent) > _NEAR_DUP_WINDOW:
                self.recent.pop(0)
        self.keys.add(key)
        return False


def repeated_sentences(text: str) -> int:
    """How many sentences of ``text`` repeat an earlier one, exactly or nearly (what the
    quality evaluation counts)."""
    held, _ = _protect_latex(text)
    seen = _SeenSentences()
    count = 0
    for line in held.split("\n"):
        for sentence in _SENTENCE_SPLIT.split(line.strip()):
            key = _sentence_key(_HOLE_RX.sub(lambda m: f"<math{m.group(1)}>", sentence))
            if len(key) >= _MIN_DEDUP_CHARS and not _ONLY_MATH.fullmatch(key) and seen.repeats(key):
                count += 1
    return count


def remove_repetition(text: str) -> str:
    """Drop sentences and lines that repeat an earlier one exactly or nearly (same words,
    :data:`_NEAR_DUP_JACCARD` overlap), then collapse word loops. Works on text whose LaTeX
    has been set aside (see :func:`clean_response`)."""
    seen = _SeenSentences()
    out: list[str] = []
    for line in text.split("\n"):
        if not line.strip():
            out.append(line)
            continue
        line = _collapse_line_loops(line)
        marker = _LIST_MARKER.match(line)
        prefix = marker.group(0) if marker else line[: len(line) - len(line.lstrip())]
        body = line[len(prefix) :].strip()
        kept: list[str] = []
        for sentence in _SENTENCE_SPLIT.split(body):
            if len(sentence) < _MIN_DEDUP_CHARS // 2 and "\x00" not in sentence:
                kept.append(sentence)  # its key is too short to dedup (lower() at most doubles)
                continue
            key = _sentence_key(_HOLE_RX.sub(_math_marker, sentence) if "\x00" in sentence else sentence)
            if len(key) >= _MIN_DEDUP_CHARS and not _ONLY_MATH.fullmatch(key):
                if seen.repeats(key):
                    continue
            kept.append(sentence)
        if kept:
            out.append(prefix + " ".join(kept))
    return "\n".join(out)


def trim_cut_off(text: str) -> str:
    """Drop the unfinished sentence at the end of a reply that hit the token limit."""
    text = text.rstrip()
    if not text:
        return text
    unclosed = max(text.rfind("$$"), text.rfind("\\["), text.rfind("\\begin{"))
    if unclosed >= 0:  # LaTeX opened but never closed (matched spans were set aside)
        text = text[:unclosed].rstrip()
        if not text:
            return text
    lines = text.split("\n")
    last = lines[-1]
    if unclosed < 0 and re.search(r"[.!?][\"')\]*_]*$", last):
        return text  # already ends a sentence
    if re.fullmatch(r"\s*(?:\x00\d+\x00\s*)+", last):
        return text  # a complete display-math line
    marker = _LIST_MARKER.match(last)
    body_start = marker.end() if marker else 0
    ends = [m for m in _SENTENCE_END.finditer(last) if m.start() >= body_start]
    if ends:
        lines[-1] = last[: ends[-1].end()]
        return "\n".join(lines)
    if len(lines) > 1:
        return "\n".join(lines[:-1]).rstrip()
    return text


def clean_response(text: str, truncated: bool = False) -> str:
    """The reply as shown to the student. ``truncated``: generation stopped at the token limit."""
    # NUL marks the LaTeX holes below; a model has no business writing one.
    text = text.replace("\r\n", "\n").replace("\x00", "")
    text = strip_special_tokens(text)
    text = strip_role_markers(text)
    held, spans = _protect_latex(text)
    held = remove_repetition(held)
    if truncated:
        held = trim_cut_off(held)
    held = TRAILING_SPACE.sub("\n", held)
    held = re.sub(r"\n{3,}", "\n\n", held).strip()
    return _restore_latex(held, spans)
