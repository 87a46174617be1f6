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
from collections.abc import Callable, Iterable

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
#: Spaces are taken possessively (``*+``): what follows them is never a space, so giving some
#: back cannot help, and a line of 100,000 spaces costs one pass instead of one per space.
_OWN_ROLE = re.compile(r"^(\s*+)(?:#{1,4}+\s*+)?(?:assistant|tutor|mimir|ai|bot|response|answer)\s*+:\s*", re.I)
_OTHER_ROLE = re.compile(r"^\s*+(?:#{1,4}+\s*+)?(?:user|student|human|system|instruction)\s*+:", re.I)

#: A span's body never holds another opener of its kind, so an opener that is never closed is
#: scanned only up to the next opener: linear time even on "\\[" repeated 50,000 times. Every
#: alternative starts with ``$`` or ``\\`` (the lone ``$``'s lookbehind comes after it), so the
#: engine skips to those characters in C instead of trying six alternatives everywhere.
_LATEX = re.compile(
    r"\$\$(?:(?!\$\$).)+?\$\$"
    r"|\\\[(?:(?!\\\[).)+?\\\]"
    r"|\\\((?:(?!\\\().)+?\\\)"
    r"|\\begin\{(?P<env>[A-Za-z*]{1,30})\}(?:(?!\\begin\{).)+?\\end\{(?P=env)\}"
    r"|\$(?<![\\$]\$)(?!\s)[^$\n]+?(?<![\s\\])\$(?!\d)"
    r"|\\[A-Za-z]+(?:\{[^{}\n]*\})+",
    re.S,
)
_HOLE = "\x00{}\x00"
_HOLE_RX = re.compile("\x00(\\d+)\x00")

#: The spaces after a sentence end and before the next word. The lookbehind follows the first
#: space, so a match starts with one and the engine skips to spaces in C.
_SENTENCE_SPLIT = re.compile(r"\s(?<=[.!?]\s)\s*(?=\S)")
_LIST_MARKER = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)]|[a-z][.)])\s+", re.I)
_SENTENCE_END = re.compile(r"[.!?][\"')\]*_]*(?=\s|$)")
#: The last match of ``_SENTENCE_END`` in a line: the greedy ``.*`` gives the text back from the
#: end, so the first sentence end it meets is the last one.
_LAST_SENTENCE_END = re.compile(r"(?s:.*)(?P<end>" + _SENTENCE_END.pattern + ")")
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


#: Where a line may start with a role marker (either kind): the whole text is scanned once in C
#: and only these lines go through the per-line patterns; every other line is kept as it is.
#: Spaces are taken possessively (what follows them is never a space) and the lookahead tests
#: the first letter of every role word at once, so a line costs a few steps, not one per word.
_ROLE_LINE = re.compile(
    r"^[^\S\n]*+(?:#{1,4}+[^\S\n]*+)?(?=[abhimrstu])"
    r"(?:user|student|human|system|instruction|assistant|tutor|mimir|ai|bot|response|answer)[^\S\n]*:",
    re.I | re.M,
)


def _role_line(line: str, has_text: bool) -> str | None:
    """``line`` without its role marker; None when it starts the student's next turn."""
    if _OTHER_ROLE.match(line):
        if has_text:
            return None  # the model started writing the student's next turn
        line = _OTHER_ROLE.sub("", line, count=1)
    return _OWN_ROLE.sub(r"\1", line, count=1)


def strip_role_markers(text: str) -> str:
    """Role markers removed from line starts; the reply ends before a line that starts a turn
    of the student (or system) after some text."""
    if ":" not in text:  # every role marker ends with a colon
        return text
    parts: list[str] = []
    has_text = False
    done: dict[tuple[str, bool], str | None] = {}  # a line that comes again is worked out once
    pos = 0  # start of the text not yet copied; always a line start
    for match in _ROLE_LINE.finditer(text):
        start = match.start()
        if not has_text and start > pos:
            kept = text[pos:start]
            has_text = not kept.isspace()
        end = text.find("\n", start)
        end = len(text) if end < 0 else end
        seen = (text[start:end], has_text)
        line = done[seen] if seen in done else done.setdefault(seen, _role_line(*seen))
        if line is None:
            parts.append(text[pos : max(start - 1, pos)])  # without the newline before the cut
            return "".join(parts)
        parts.append(text[pos:start])
        parts.append(line)
        has_text = has_text or not (not line or line.isspace())
        pos = end
    parts.append(text[pos:])
    return "".join(parts)


#: ``_LATEX`` inside one group: ``split`` hands back text, span and the environment's name in turn.
_LATEX_SPLIT = re.compile("(" + _LATEX.pattern + ")", _LATEX.flags)


def _protect_latex(text: str) -> tuple[str, list[str]]:
    """``text`` with each LaTeX span replaced by a hole ``NUL index NUL``, and the spans (one
    entry per distinct span). Built from one C-level split, whatever the number of spans."""
    parts = _LATEX_SPLIT.split(text)
    found = parts[1::3]
    spans = list(dict.fromkeys(found))  # distinct spans in order of first appearance
    holes = {span: _HOLE.format(i) for i, span in enumerate(spans)}
    parts[1::3] = map(holes.__getitem__, found)
    parts[2::3] = [""] * len(found)  # the environment names the group also captured
    return "".join(parts), spans


def _holes(text: str) -> list[str] | None:
    """``text`` split at its NULs, when they pair up around ASCII digits as the holes of
    :func:`_protect_latex` do (odd items are the indices); None for any other use of NUL."""
    parts = text.split("\x00")
    numbers = parts[1::2]
    if len(parts) % 2 and all(numbers):
        digits = "".join(numbers)
        if digits.isascii() and digits.isdigit():
            return parts
    return None


def _fill_holes(text: str, fill: Callable[[str], str]) -> str:
    """Each hole of :func:`_protect_latex` replaced by ``fill(index digits)``, worked out once
    per distinct hole (one split and join when the NULs are all holes)."""
    parts = _holes(text)
    if parts is None:
        return _HOLE_RX.sub(lambda m: fill(m.group(1)), text)
    numbers = parts[1::2]
    filled = {number: fill(number) for number in set(numbers)}
    parts[1::2] = map(filled.__getitem__, numbers)
    return "".join(parts)


def _restore_latex(text: str, spans: list[str]) -> str:
    return _fill_holes(text, lambda number: spans[int(number)])


def _with_math_markers(text: str) -> str:
    """Each hole replaced by ``<mathN>``, so a sentence's key tells its formulas apart."""
    return _fill_holes(text, "<math{}>".format)


#: Markdown characters a sentence's key leaves out (deleted in one C pass by ``str.translate``).
_MARKUP = str.maketrans("", "", "*_#`>")
_ONLY_MATH = re.compile(r"(?:<math\d+>\s*)+")


def _sentence_key(sentence: str) -> str:
    key = _LIST_MARKER.sub("", sentence).translate(_MARKUP).lower()
    return " ".join(key.split()).strip(" .!?;:,")  # runs of spaces as one, none at the ends


_KEY_PUNCT = ".,;:!?\"'()*"


def _copies(keys: list[str], i: int, n: int) -> int:
    """How many copies of ``keys[i : i + n]`` follow one another from ``i``. Compares runs of
    copies that double in length (list comparisons in C), so a run of 50,000 costs ~16 steps."""
    pattern = keys[i : i + n]
    reps, step = 1, 1
    while True:
        start = i + reps * n
        if keys[start : start + step * n] == pattern * step:
            reps += step
            step *= 2
        elif step > 1:
            step //= 2
        else:
            return reps


def collapse_loops(words: list[str]) -> list[str]:
    """Collapse a word sequence repeated back to back: 3+ copies for 1-3 words, 2+ copies
    for longer sequences (up to 30 words)."""
    distinct = {word: word.lower().strip(_KEY_PUNCT) for word in set(words)}  # a loop repeats words
    keys = list(map(distinct.__getitem__, words))
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
        shortest, longest = max(1, keyed - i + 1), min(_MAX_LOOP_WORDS, (len(words) - i) // 2)
        # A repeat starts with the same word: one scan in C rules out most positions.
        if shortest <= longest and first in keys[i + shortest : i + longest + 1]:
            for n in range(shortest, longest + 1):
                if keys[i + n] != first:
                    continue
                reps = _copies(keys, i, n)
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
            key = _sentence_key(_with_math_markers(sentence))
            if len(key) >= _MIN_DEDUP_CHARS and not _ONLY_MATH.fullmatch(key) and seen.repeats(key):
                count += 1
    return count


#: Runs of lines that :func:`remove_repetition` returns as they are, found in one C scan: blank
#: lines, one hole of set-aside LaTeX, and lines of at most 5 characters without trailing space:
#: one word, or two without NUL (no key reaches ``_MIN_DEDUP_CHARS``, no word loop, no space
#: to normalise: a sentence end is followed by one plain space).
_UNCHANGED_LINES = re.compile(
    r"^(?:\s*\n"  # any number of blank lines in one step
    r"|(?:[^\S\n]*+\Z"
    r"|\x00\d{1,6}\x00"
    r"|(?=[^\n]{1,5}$)[^\S\n]*(?:\S+|[^\s\x00]+(?:(?<![.!?])[^\S\n]+|(?<=[.!?]) )[^\s\x00]+)"
    r")(?:\n|\Z))+",
    re.M,
)


def _dedup_line(line: str, seen: _SeenSentences) -> tuple[str | None, str | None]:
    """One non-blank line without its repeated sentences (None: nothing left), and the same
    line's result when it comes again.

    On any later occurrence every sentence compared against ``seen`` is an exact repeat
    (``seen`` keeps every key it was given, and an exact hit changes nothing), so only the
    sentences too short to compare stay. The second value is ``"\x00"`` (no line holds one
    here) when a sentence was dropped as a near duplicate, whose key is not kept: a later
    occurrence would be judged again."""
    line = _collapse_line_loops(line)
    marker = _LIST_MARKER.match(line)
    prefix = marker.group(0) if marker else line[: len(line) - len(line.lstrip())]
    body = line[len(prefix) :].strip()
    sentences = _SENTENCE_SPLIT.split(body)
    if "\x00" not in body and max(map(len, sentences)) < _MIN_DEDUP_CHARS // 2:
        joined = prefix + " ".join(sentences)  # all too short to compare (one C pass to know)
        return joined, joined
    kept: list[str] = []
    short: list[str] = []  # the sentences never compared
    stable = True
    for sentence in sentences:
        if len(sentence) < _MIN_DEDUP_CHARS // 2 and "\x00" not in sentence:
            kept.append(sentence)  # its key is too short to dedup (lower() at most doubles)
            short.append(sentence)
            continue
        key = _sentence_key(_with_math_markers(sentence) if "\x00" in sentence else sentence)
        if len(key) >= _MIN_DEDUP_CHARS and not _ONLY_MATH.fullmatch(key):
            repeated = seen.repeats(key)
            stable = stable and key in seen.keys
            if repeated:
                continue
        else:
            short.append(sentence)
        kept.append(sentence)
    again = (prefix + " ".join(short) if short else None) if stable else "\x00"
    return (prefix + " ".join(kept) if kept else None), again


def _dedup_lines(lines: list[str], seen: _SeenSentences, out: list[str], again: dict[str, str | None]) -> None:
    for line in lines:
        if line in again:  # the line came before: its result no longer depends on ``seen``
            done = again[line]
        elif not line.strip():
            done = line
        else:
            done, later = _dedup_line(line, seen)
            if later != "\x00":
                again[line] = later
        if done is not None:
            out.append(done)


def remove_repetition(text: str) -> str:
    """Drop sentences and lines that repeat an earlier one exactly or nearly (same words,
    :data:`_NEAR_DUP_JACCARD` overlap), then collapse word loops. Works on text whose LaTeX
    has been set aside (see :func:`clean_response`).

    Runs of lines that cannot change are copied in bulk, and a line that comes again is worked
    out once: the cost follows the distinct lines, not the number of lines."""
    seen = _SeenSentences()
    out: list[str] = []
    again: dict[str, str | None] = {}
    pos = 0
    for run in _UNCHANGED_LINES.finditer(text):
        start, end = run.span()
        if start > pos:  # the lines before the run, without the newline that ends the last one
            _dedup_lines(text[pos : start - 1].split("\n"), seen, out, again)
        if end == len(text):  # the run holds the last line (an empty one after a final newline)
            out.extend(text[start:].split("\n"))
            break
        out.extend(text[start : end - 1].split("\n"))
        pos = end
    else:
        _dedup_lines(text[pos:].split("\n"), seen, out, again)
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
    end = _LAST_SENTENCE_END.match(last)  # the last sentence end, found by one scan in C
    if end and end.start("end") >= body_start:
        lines[-1] = last[: end.end()]
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
    # Spaces at line ends go now as well as at the end: remove_repetition drops them from every
    # line it works on anyway, and without them most short lines are ones it copies in bulk.
    held = remove_repetition(TRAILING_SPACE.sub("\n", held))
    if truncated:
        held = trim_cut_off(held)
    held = TRAILING_SPACE.sub("\n", held)
    held = re.sub(r"\n{3,}", "\n\n", held).strip()
    return _restore_latex(held, spans)


#: How many opening words of a sentence identify it as a copy of an instruction.
_ECHO_WORDS = 5
_FIRST_WORD = re.compile(r"[a-z0-9]", re.I)


def echo_pattern(instructions: Iterable[str]) -> re.Pattern[str]:
    """Where a sentence could open like one of ``instructions``: its first words (up to
    :data:`_ECHO_WORDS`, at least 4), in order, in any case, with anything but letters and
    digits between and around them (taken possessively, so a long gap is scanned once)."""
    openings = set()
    for instruction in instructions:
        words = _KEY_WORD.findall(instruction.lower())[:_ECHO_WORDS]
        if len(words) >= 4:  # shorter openings are ordinary prose
            openings.add("[^a-z0-9]++".join(map(re.escape, words)))
    if not openings:
        return re.compile(r"(?!)")  # matches nothing
    return re.compile(r"(?<![a-z0-9])(?:" + "|".join(sorted(openings)) + r")(?![a-z0-9])", re.I)


def _opens_with(sentence: str, opening: re.Pattern[str]) -> bool:
    first = _FIRST_WORD.search(sentence)
    return first is not None and opening.match(sentence, first.start()) is not None


def drop_echoes(text: str, opening: re.Pattern[str]) -> str:
    """Drop the sentences that begin like one of the model's own instructions (``opening``
    from :func:`echo_pattern`). A small model copies its private notes into the answer ("Say
    which part is wrong and give one hint; do not provide the full solution."); the student
    must not read them. Linear: one scan finds the lines worth looking at."""
    if not text or not opening.search(text):  # one scan in C: most replies copy nothing
        return text
    out: list[str] = []
    changed = False
    for line in text.split("\n"):
        if not opening.search(line):
            out.append(line)
            continue
        sentences = _SENTENCE_SPLIT.split(line)
        kept = [sentence for sentence in sentences if not _opens_with(sentence, opening)]
        changed = changed or len(kept) != len(sentences)
        if kept or not line.strip():
            out.append(" ".join(kept) if len(kept) != len(sentences) else line)
    return "\n".join(out).strip() if changed else text
