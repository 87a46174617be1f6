"""The graph tool: numbers with labels -> a bar, line or pie chart (PNG) plus a text description.

Data comes from the student's message (:func:`find_chart_data`) or from a model's structured
output (:func:`parse_chart_json`). Bad or missing data never raises: :func:`make_chart` and
:func:`draw_chart` return a :class:`ChartResult` without a path and with the reason, and the
turn goes on. Matplotlib (extra ``charts``) is imported only when a chart is drawn, through
its object API (no pyplot global state, safe in threads).
"""

from __future__ import annotations

import json
import math
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from mimir.errors import MissingExtraError

ChartKind = Literal["bar", "line", "pie"]
KINDS: tuple[str, ...] = ("bar", "line", "pie")
MIN_POINTS = 2
MAX_POINTS = 40
FIGURE_SIZE_IN = (6.4, 4.0)
FIGURE_DPI = 100
MAX_LABEL_CHARS = 40
#: Data is looked for in the first this many characters of a message (40 points fit easily).
MAX_MESSAGE_CHARS = 4000


@dataclass(frozen=True)
class ChartData:
    kind: ChartKind
    labels: tuple[str, ...]
    values: tuple[float, ...]
    title: str = ""
    #: Values were written as percentages ("40%").
    percent: bool = False

    @property
    def size(self) -> int:
        return len(self.values)


@dataclass(frozen=True)
class ChartResult:
    #: The PNG written, or ``None`` when no chart was drawn.
    path: Path | None
    #: Text for the response model ("Bar chart 'Sales': Jan 10, ...") or ``""``.
    description: str
    #: Why no chart was drawn (``None`` when one was).
    reason: str | None = None
    data: ChartData | None = None

    @property
    def ok(self) -> bool:
        return self.path is not None


# -- reading data from a message -------------------------------------------------------------

#: Starts where a digit run starts and takes at most six thousands groups, so no pattern using it
#: rescans a long run of digits from every position in it (linear time on any input).
_NUM = r"[-+]?[$€£]?(?<!\d)(?:\d{1,3}(?:,\d{3}){1,6}|\d+)(?:\.\d+)?"
#: A number ends at a non-word character; a period ends it only as sentence punctuation.
_END = r"(?!\w|\.\d)"
_PAIR = re.compile(
    r"(?<![A-Za-z0-9'&./\-])(?P<label>[A-Za-z][A-Za-z0-9'&./\-]*(?:[ \t]+[A-Za-z][A-Za-z0-9'&./\-]*){0,3})"
    r"(?:[ \t]*(?:[:=\u2013]|\bwas\b|\bis\b|\bwere\b|\bare\b|\bhad\b|\bat\b)|[ \t]+-(?=[ \t]))?[ \t]*"
    r"(?P<value>" + _NUM + r")(?P<pct>[ \t]*(?:%|percent\b))?" + _END
)
_NUM_FIRST = re.compile(
    r"(?<![\w.])(?P<value>" + _NUM + r")(?P<pct>[ \t]*(?:%|percent\b))?[ \t]+(?:of[ \t]+)?"
    r"(?P<label>[A-Za-z][A-Za-z'&\-]*(?:[ \t]+[A-Za-z][A-Za-z'&\-]*){0,2}?)(?=[ \t]*(?:,|;|\band\b|\n|\.|$))"
)
_YEAR_PAIR = re.compile(r"(?<![\w.])(?P<label>(?:1[5-9]|20)\d{2})[ \t]*(?:[:=\-\u2013][ \t]*)?(?P<value>" + _NUM + r")(?P<pct>%)?" + _END)
_NUMBERED_LABEL = re.compile(
    r"(?<![\w.'\-])(?P<label>[A-Za-z][A-Za-z'\-]*[ \t]+\d{1,2})[ \t]*(?:[:=\-\u2013][ \t]*)?(?P<value>" + _NUM + r")(?P<pct>[ \t]*%)?" + _END
)
_MEASURE_PAIR = re.compile(
    r"(?<![\w.])(?P<x>" + _NUM + r")[ \t]*(?P<xu>[A-Za-z\u00b0%]{1,12})[ \t]+(?P<value>" + _NUM + r")(?P<pct>[ \t]*%)?[ \t]*[A-Za-z]{0,12}(?=[ \t]*(?:,|;|\band\b|\n|\.|$))"
)
_VALUE_IN_YEAR = re.compile(
    r"(?P<value>" + _NUM + r")(?P<pct>[ \t]*%)?[ \t]+(?:in|during|for|by)[ \t]+(?P<label>(?:1[5-9]|20)\d{2})" + _END
)
_XY = re.compile(r"\(\s*(?P<x>-?\d+(?:\.\d+)?)\s*,\s*(?P<y>-?\d+(?:\.\d+)?)\s*\)")
_TABLE_SPLIT = re.compile(r"[|\t;,]")
_LABEL_STOP = set(
    """i we you they he she it my our your their the a an and or of to for in on at with by from
    sold had made got earned spent scored have has get were was is are be about around roughly
    approximately total plus then there that this these those me us make draw plot show chart graph
    create give please can could would bar line pie data numbers values here my""".split()
)
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_TIME_LABEL = re.compile(
    r"^(?:(?:" + "|".join(_MONTHS) + r")[a-z]*\.?(?:\s+\d{2,4})?|(?:" + "|".join(_DAYS) + r")[a-z]*\.?"
    r"|(?:1[5-9]|20)\d{2}|q[1-4](?:\s+\d{4})?|(?:week|day|month|year|hour|quarter|term|semester|round|test|quiz)\s*\d+"
    r"|\d+(?:\.\d+)?)$",
    re.I,
)
_EXPLICIT = [
    ("pie", re.compile(r"\bpie\b", re.I)),
    ("line", re.compile(r"\bline\s*(?:chart|graph|plot)s?\b|\bover\s+time\b|\btrend\b|\btime\s*series\b", re.I)),
    ("bar", re.compile(r"\b(?:bar|column)\s*(?:chart|graph|plot)s?\b|\bhistograms?\b", re.I)),
]
_PARTS = re.compile(r"\b(?:share|shares|breakdown|proportion|split|parts?\s+of|percent(?:age)?s?\s+of|budget|makeup|composition)\b", re.I)
_TITLE = re.compile(
    r"\b(?:chart|graph|plot|diagram)\s+(?:of|for|showing|about|comparing|with)\s+(?:the\s+|my\s+|our\s+|these\s+|this\s+)?"
    r"(?P<title>[A-Za-z][A-Za-z '\-]{1,50}?)\s*(?=[:,.;(]|$|\b(?:with|from|in|using|so|for|by)\b|\d)",
    re.I,
)
_LEAD_TITLE = re.compile(r"(?:^|[.!?\n][ \t]*)(?P<title>[A-Za-z][A-Za-z '\-]{1,40}?)\s*:\s*(?=\S)")


def _number(raw: str) -> float:
    return float(raw.replace(",", "").lstrip("$€£").replace("$", "").replace("€", "").replace("£", ""))


def _clean_label(raw: str) -> str:
    words = raw.strip(" .:-").split()
    while len(words) > 1 and words[0].lower() in _LABEL_STOP:
        words.pop(0)
    while words and words[-1].lower() in {"and", "or", "of", "the", "is", "was", "were", "are", "at"}:
        words.pop()
    return " ".join(words)[:MAX_LABEL_CHARS]


def _preceded_by_operator(text: str, start: int) -> bool:
    """A label glued to a coefficient (``3y``) or after an operator is a variable, not a label."""
    if start > 0 and text[start - 1].isdigit():
        return True
    before = text[:start].rstrip()
    return bool(before) and before[-1] in ")^*/+=<>"


def _pairs_label_first(text: str) -> list[tuple[str, float, bool]]:
    found = []
    for m in _PAIR.finditer(text):
        if _preceded_by_operator(text, m.start()):
            continue
        label = _clean_label(m.group("label"))
        if label:
            found.append((label, _number(m.group("value")), bool(m.group("pct"))))
    return found


def _pairs_number_first(text: str) -> list[tuple[str, float, bool]]:
    found = []
    for m in _NUM_FIRST.finditer(text):
        label = _clean_label(m.group("label"))
        if label:
            found.append((label, _number(m.group("value")), bool(m.group("pct"))))
    return found


def _pairs_years(text: str) -> list[tuple[str, float, bool]]:
    return [(m.group("label"), _number(m.group("value")), bool(m.group("pct"))) for m in _YEAR_PAIR.finditer(text)]


def _pairs_table(text: str) -> list[tuple[str, float, bool]]:
    rows = []
    for line in text.splitlines():
        if not re.search(r"\||\t", line) and line.count(",") != 1:
            continue
        cells = [c.strip() for c in _TABLE_SPLIT.split(line.strip().strip("|"))]
        cells = [c for c in cells if c]
        if len(cells) != 2:
            continue
        label, value = cells
        value_m = re.fullmatch(r"(" + _NUM + r")\s*(%)?", value)
        if value_m and label and not set(label) <= set("-: "):
            rows.append((label.strip()[:MAX_LABEL_CHARS], _number(value_m.group(1)), bool(value_m.group(2))))
    return rows if len(rows) >= MIN_POINTS else []


def _pairs_from(rx: re.Pattern[str], text: str, label_of=lambda m: m.group("label")) -> list[tuple[str, float, bool]]:
    return [(label_of(m).strip(), _number(m.group("value")), bool(m.group("pct"))) for m in rx.finditer(text)]


def _pairs_xy(text: str) -> list[tuple[str, float, bool]]:
    return [(m.group("x"), float(m.group("y")), False) for m in _XY.finditer(text)]


def _choose_kind(text: str, labels: tuple[str, ...], values: tuple[float, ...], percent: bool) -> ChartKind:
    for kind, rx in _EXPLICIT:
        if rx.search(text):
            return kind  # type: ignore[return-value]
    if all(_TIME_LABEL.match(label) for label in labels):
        return "line"
    if (percent and 95 <= sum(values) <= 105) or (_PARTS.search(text) and all(v >= 0 for v in values)):
        return "pie"
    return "bar"


def _title(text: str) -> str:
    m = _TITLE.search(text)
    if m:
        return m.group("title").strip().rstrip(" -")[:60]
    m = _LEAD_TITLE.search(text)
    if m:
        words = _clean_label(m.group("title"))
        if words and len(words.split()) <= 5:
            return words[:60]
    return ""


def find_chart_data(message: str) -> ChartData | None:
    """Numbers with labels found in the student's text, or ``None``.

    Understood forms: "sales: Jan 10, Feb 15, Mar 9", "A=3, B=5", "apples 4 oranges 7",
    "4 apples, 7 oranges", "2019: 10, 2020: 12", two-column tables (``|``, tab or one comma
    per line) and (x, y) pairs.
    """
    text = message[:MAX_MESSAGE_CHARS].strip()
    candidates = [
        _pairs_xy(text),
        _pairs_table(text),
        _pairs_years(text),
        _pairs_label_first(text),
        _pairs_number_first(text),
    ]
    candidates += [
        _pairs_from(_NUMBERED_LABEL, text),
        _pairs_from(_VALUE_IN_YEAR, text),
        _pairs_from(_MEASURE_PAIR, text, lambda m: f"{m.group('x')} {m.group('xu')}"),
    ]

    def quality(pairs: list[tuple[str, float, bool]]) -> float:
        # Repeated labels ("cm", "cm") mean the wrong part was read as the label.
        unique = len({label.lower() for label, _, _ in pairs})
        return unique + (0.5 if unique == len(pairs) else 0.0)

    best = max(candidates, key=quality)
    if len(best) < MIN_POINTS or quality(best) < MIN_POINTS:
        return None
    best = best[:MAX_POINTS]
    labels = tuple(label for label, _, _ in best)
    values = tuple(value for _, value, _ in best)
    percent = all(p for _, _, p in best)
    kind = _choose_kind(text, labels, values, percent)
    title = _title(text)
    title = title[:1].upper() + title[1:]
    return ChartData(kind=kind, labels=labels, values=values, title=title, percent=percent)


# -- reading data a model produced -----------------------------------------------------------------


#: Model output longer than this is cut before JSON is looked for in it, and at most this many
#: ``{`` are tried as object starts: a reply of nested or unclosed braces stays cheap.
MAX_JSON_CHARS = 8000
MAX_JSON_STARTS = 32


def _json_objects(text: str):
    decoder = json.JSONDecoder()
    text = text[:MAX_JSON_CHARS]
    start = text.find("{")
    tries = 0
    while start >= 0 and tries < MAX_JSON_STARTS:
        tries += 1
        try:
            obj, _ = decoder.raw_decode(text, start)
        except (ValueError, RecursionError):  # also too-long integers
            obj = None
        if isinstance(obj, dict):
            yield obj
        start = text.find("{", start + 1)


def _chart_from_json(text: str) -> tuple[ChartData | None, str]:
    objects = list(_json_objects(text))
    if not objects:
        return None, "the model output holds no JSON object"
    reason = ""
    for obj in objects:
        data, reason = _chart_from_obj(obj)
        if data is not None:
            return data, ""
    return None, reason


def _chart_from_obj(obj: dict) -> tuple[ChartData | None, str]:
    kind = str(obj.get("type", obj.get("kind", obj.get("chart", "bar")))).lower().replace(" chart", "").strip()
    if kind in {"column", "histogram"}:
        kind = "bar"
    if kind not in KINDS:
        return None, f"chart type '{kind}' is not one of {', '.join(KINDS)}"
    labels = obj.get("labels")
    values = obj.get("values")
    data = obj.get("data")
    if labels is None and values is None and isinstance(data, dict):
        labels, values = list(data.keys()), list(data.values())
    elif labels is None and values is None and isinstance(data, list):
        try:
            labels = [item["label"] for item in data]
            values = [item["value"] for item in data]
        except (TypeError, KeyError):
            return None, "'data' must be a list of {label, value} objects"
    if not isinstance(labels, list) or not isinstance(values, list):
        return None, "the JSON needs 'labels' and 'values' lists"
    if len(labels) != len(values):
        return None, f"{len(labels)} labels but {len(values)} values"
    nums: list[float] = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            return None, f"value {value!r} is not a number"
        try:
            nums.append(_number(str(value).rstrip("% ")) if isinstance(value, str) else float(value))
        except ValueError:
            return None, f"value {value!r} is not a number"
    title = obj.get("title", "")
    chart = ChartData(
        kind=kind,  # type: ignore[arg-type]
        labels=tuple(str(label)[:MAX_LABEL_CHARS] for label in labels),
        values=tuple(nums),
        title=str(title)[:60] if isinstance(title, (str, int, float)) else "",
    )
    problem = chart_data_problem(chart)
    return (None, problem) if problem else (chart, "")


def parse_chart_json(text: str) -> ChartData | None:
    """Chart data from a model's structured output: a JSON object (possibly inside prose or a
    code fence) with ``type``, ``labels``, ``values`` and ``title``, or ``data`` as a
    ``{label: value}`` object. ``None`` when there is no valid one."""
    return _chart_from_json(text)[0]


# -- checking, describing, drawing ----------------------------------------------------------------


def chart_data_problem(data: ChartData) -> str | None:
    """Why the data cannot make a sensible chart, or ``None`` when it can."""
    if data.kind not in KINDS:
        return f"chart type '{data.kind}' is not one of {', '.join(KINDS)}"
    if len(data.labels) != len(data.values):
        return f"{len(data.labels)} labels but {len(data.values)} values"
    if len(data.values) < MIN_POINTS:
        return f"a chart needs at least {MIN_POINTS} values, got {len(data.values)}"
    if len(data.values) > MAX_POINTS:
        return f"too many values for one chart ({len(data.values)} > {MAX_POINTS})"
    if not all(math.isfinite(v) for v in data.values):
        return "a value is not a finite number"
    if any(not str(label).strip() for label in data.labels):
        return "a label is empty"
    if data.kind == "pie":
        if any(v < 0 for v in data.values):
            return "a pie chart cannot show negative values"
        if sum(data.values) <= 0:
            return "a pie chart needs values that add up to more than zero"
    return None


def _fmt(value: float) -> str:
    if float(value).is_integer():
        return f"{int(value):,}" if abs(value) >= 10000 else str(int(value))
    return f"{value:.4g}"


def describe_chart(data: ChartData) -> str:
    """A short text version of the chart for the response model."""
    unit = "%" if data.percent else ""
    name = f"{data.kind.capitalize()} chart" + (f" '{data.title}'" if data.title else "")
    points = ", ".join(f"{label} {_fmt(v)}{unit}" for label, v in zip(data.labels, data.values))
    hi = max(range(data.size), key=lambda i: data.values[i])
    lo = min(range(data.size), key=lambda i: data.values[i])
    if data.kind == "pie":
        total = sum(data.values)
        shares = ", ".join(
            f"{label} {v / total * 100:.0f}%" for label, v in zip(data.labels, data.values)
        )
        return f"{name}: {shares}; largest {data.labels[hi]} ({_fmt(data.values[hi])}{unit}), smallest {data.labels[lo]} ({_fmt(data.values[lo])}{unit})"
    text = f"{name}: {points}; highest {data.labels[hi]} ({_fmt(data.values[hi])}{unit}), lowest {data.labels[lo]} ({_fmt(data.values[lo])}{unit})"
    if data.kind == "line":
        first, last = data.values[0], data.values[-1]
        trend = "rises" if last > first else "falls" if last < first else "ends where it starts"
        text += f"; from {data.labels[0]} to {data.labels[-1]} it {trend} ({_fmt(first)} to {_fmt(last)})"
    return text


def _unique_png(out_dir: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return out_dir / f"chart-{stamp}-{uuid.uuid4().hex[:8]}.png"


def draw_chart(data: ChartData | None, out_dir: Path | str) -> ChartResult:
    """Draw ``data`` as a PNG under ``out_dir`` (created if needed). Invalid or missing data:
    a result without a path, with the reason. Needs the ``charts`` extra."""
    if data is None:
        return ChartResult(None, "", "no chart data")
    problem = chart_data_problem(data)
    if problem:
        return ChartResult(None, "", problem, data)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise MissingExtraError("matplotlib", "charts", "drawing charts") from None

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = _unique_png(out)
    try:
        _draw(data, path)
    except Exception as exc:  # noqa: BLE001 - a chart that cannot be drawn never fails the turn
        path.unlink(missing_ok=True)
        return ChartResult(None, "", f"the chart could not be drawn ({type(exc).__name__}: {exc})"[:300], data)
    return ChartResult(path, describe_chart(data), None, data)


def _plain(text: str) -> str:
    """Text Matplotlib shows as written: ``$`` would start mathtext (and a bad formula raises)."""
    return text.replace("$", r"\$")


def _draw(data: ChartData, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIGURE_SIZE_IN, dpi=FIGURE_DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    labels = [_plain(label) for label in data.labels]
    values = list(data.values)
    if data.kind == "bar":
        ax.bar(range(len(values)), values, color="#4C72B0")
        ax.set_xticks(range(len(values)), labels, rotation=30 if len(labels) > 6 else 0, ha="right" if len(labels) > 6 else "center")
        ax.axhline(0, color="#333333", linewidth=0.8)
    elif data.kind == "line":
        ax.plot(range(len(values)), values, marker="o", color="#4C72B0")
        ax.set_xticks(range(len(values)), labels, rotation=30 if len(labels) > 8 else 0)
        ax.grid(True, alpha=0.3)
    else:
        ax.pie(values, labels=labels, autopct="%1.0f%%", startangle=90, counterclock=False)
        ax.set_aspect("equal")
    if data.title:
        ax.set_title(_plain(data.title))
    if data.kind != "pie" and data.percent:
        ax.set_ylabel("%")
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=FIGURE_DPI)


def make_chart(message: str, out_dir: Path | str, *, model_output: str | None = None) -> ChartResult:
    """The graph tool in one call: data from the student's message first, else from the
    model's structured output; never raises for bad data."""
    data = find_chart_data(message)
    reason = "no numbers with labels found in the message"
    if data is None and model_output is not None:
        data, json_reason = _chart_from_json(model_output)
        reason = f"{reason}; {json_reason}" if data is None else ""
    if data is None:
        return ChartResult(None, "", reason)
    return draw_chart(data, out_dir)
