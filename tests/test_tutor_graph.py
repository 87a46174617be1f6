from __future__ import annotations

import os
from pathlib import Path

import pytest

from mimir.tutor.graph import (
    FIGURE_DPI,
    FIGURE_SIZE_IN,
    ChartData,
    chart_data_problem,
    describe_chart,
    draw_chart,
    find_chart_data,
    make_chart,
    parse_chart_json,
)


@pytest.mark.parametrize(
    "message, labels, values",
    [
        ("sales: Jan 10, Feb 15, Mar 9", ("Jan", "Feb", "Mar"), (10, 15, 9)),
        ("A=3, B=5", ("A", "B"), (3, 5)),
        ("apples 4 oranges 7", ("apples", "oranges"), (4, 7)),
        ("4 apples, 7 oranges, 2 pears", ("apples", "oranges", "pears"), (4, 7, 2)),
        ("Product | Units\nPens | 12\nBooks | 7\nBags | 3", ("Pens", "Books", "Bags"), (12, 7, 3)),
        ("plot (1, 2), (2, 4), (3, 9)", ("1", "2", "3"), (2, 4, 9)),
        ("2019: 10, 2020: 12, 2021: 9", ("2019", "2020", "2021"), (10, 12, 9)),
        ("Plot profit: Q1 -5, Q2 3.5, Q3 1,200.", ("Q1", "Q2", "Q3"), (-5, 3.5, 1200)),
        ("scores: quiz 1 72, quiz 2 80, quiz 3 91.", ("quiz 1", "quiz 2", "quiz 3"), (72, 80, 91)),
        ("results: 10 degrees 2 cm, 20 degrees 5 cm, 30 degrees 9 cm", ("10 degrees", "20 degrees", "30 degrees"), (2, 5, 9)),
    ],
)
def test_find_chart_data_reads_common_forms(message, labels, values):
    data = find_chart_data(message)
    assert data is not None
    assert data.labels == labels
    assert data.values == tuple(float(v) for v in values)


@pytest.mark.parametrize(
    "message, kind",
    [
        ("Make a pie chart: Jan 10, Feb 15, Mar 9", "pie"),  # explicit request wins
        ("sales: Jan 10, Feb 15, Mar 9", "line"),  # time-like labels
        ("rent 40%, food 30%, savings 30%", "pie"),  # percentages of a whole
        ("moons: Earth 1, Mars 2, Jupiter 95", "bar"),
        ("as a bar chart: 2019: 10, 2020: 12", "bar"),
        ("trend over time: A 1, B 2, C 3", "line"),
    ],
)
def test_chart_kind_choice(message, kind):
    data = find_chart_data(message)
    assert data is not None and data.kind == kind


@pytest.mark.parametrize(
    "message",
    ["make a chart", "Solve 3x - y = 7 and 2x + 3y = 1", "I scored 90", "What is photosynthesis?"],
)
def test_no_data_found(message):
    assert find_chart_data(message) is None


def test_title_from_the_request():
    assert find_chart_data("Can you make a bar chart of my test scores: math 85, science 92").title == "Test scores"
    assert find_chart_data("sales: Jan 10, Feb 15").title == "Sales"


def test_parse_chart_json_forms():
    data = parse_chart_json('Here: ```json\n{"type": "line", "title": "Growth", "labels": ["a", "b"], "values": [1, "2.5"]}\n```')
    assert data == ChartData("line", ("a", "b"), (1.0, 2.5), "Growth")
    mapping = parse_chart_json('{"chart": "pie", "data": {"x": 1, "y": 3}}')
    assert mapping.kind == "pie" and mapping.labels == ("x", "y")
    listed = parse_chart_json('{"type": "bar chart", "data": [{"label": "p", "value": 2}, {"label": "q", "value": 4}]}')
    assert listed.kind == "bar" and listed.values == (2.0, 4.0)


@pytest.mark.parametrize(
    "text",
    [
        "no json here",
        '{"type": "radar", "labels": ["a", "b"], "values": [1, 2]}',
        '{"type": "bar", "labels": ["a", "b"], "values": [1]}',
        '{"type": "bar", "labels": ["a", "b"], "values": [1, "lots"]}',
        '{"type": "bar", "labels": ["a"], "values": [1]}',
        '{"type": "pie", "labels": ["a", "b"], "values": [1, -1]}',
        '{"type": "bar", "labels": ["a", "b"], "values": [1, true]}',
        '{"type": "bar", "labels": ["a", "b"], "values": [1, NaN]}',
    ],
)
def test_parse_chart_json_rejects_bad_data(text):
    assert parse_chart_json(text) is None


def test_problems_are_named():
    assert "negative" in chart_data_problem(ChartData("pie", ("a", "b"), (1.0, -1.0)))
    assert "at least 2" in chart_data_problem(ChartData("bar", ("a",), (1.0,)))
    assert "finite" in chart_data_problem(ChartData("line", ("a", "b"), (1.0, float("inf"))))
    assert chart_data_problem(ChartData("bar", ("a", "b"), (1.0, 2.0))) is None


def test_description_names_points_extremes_and_trend():
    bar = ChartData("bar", ("Jan", "Feb", "Mar"), (10.0, 15.0, 9.0), "Sales by month")
    assert describe_chart(bar) == "Bar chart 'Sales by month': Jan 10, Feb 15, Mar 9; highest Feb (15), lowest Mar (9)"
    line = describe_chart(ChartData("line", ("2019", "2020"), (1.5, 3.0)))
    assert line.startswith("Line chart: 2019 1.5, 2020 3") and "rises" in line
    pie = describe_chart(ChartData("pie", ("rent", "food"), (30.0, 10.0), "Budget"))
    assert "rent 75%" in pie and "food 25%" in pie and "largest rent" in pie


@pytest.mark.parametrize("kind", ["bar", "line", "pie"])
def test_draw_chart_writes_a_real_png(tmp_path: Path, kind):
    import matplotlib.image as mpimg

    data = ChartData(kind, ("Jan", "Feb", "Mar"), (10.0, 15.0, 9.0), "Sales")
    result = draw_chart(data, tmp_path / "charts")
    assert result.ok and result.reason is None
    assert result.path.parent == tmp_path / "charts" and result.path.suffix == ".png"
    image = mpimg.imread(result.path)
    width, height = (round(d * FIGURE_DPI) for d in FIGURE_SIZE_IN)
    assert image.shape[:2] == (height, width)
    assert image.std() > 0.01  # not a blank canvas
    assert result.description.startswith(f"{kind.capitalize()} chart 'Sales'")


def test_each_chart_gets_its_own_file(tmp_path: Path):
    data = ChartData("bar", ("a", "b"), (1.0, 2.0))
    first = draw_chart(data, tmp_path)
    second = draw_chart(data, tmp_path)
    assert first.path != second.path
    assert sorted(os.listdir(tmp_path)) == sorted([first.path.name, second.path.name])


def test_bad_or_missing_data_gives_a_reason_not_an_exception(tmp_path: Path):
    missing = make_chart("Can you draw a chart for me?", tmp_path)
    assert not missing.ok and "no numbers" in missing.reason and missing.description == ""
    invalid = draw_chart(ChartData("pie", ("a", "b"), (-1.0, 2.0)), tmp_path)
    assert not invalid.ok and "negative" in invalid.reason
    assert draw_chart(None, tmp_path).reason == "no chart data"
    bad_model = make_chart("chart please", tmp_path, model_output="{oops")
    assert not bad_model.ok and "no JSON object" in bad_model.reason
    assert list(tmp_path.iterdir()) == []


def test_make_chart_prefers_message_then_model_output(tmp_path: Path):
    from_message = make_chart("Plot these monthly sales: Jan 10, Feb 15, Mar 9", tmp_path)
    assert from_message.ok and from_message.data.labels == ("Jan", "Feb", "Mar")
    from_model = make_chart(
        "Chart how the moons compare", tmp_path, model_output='{"type": "bar", "labels": ["Mars", "Earth"], "values": [2, 1]}'
    )
    assert from_model.ok and from_model.description.startswith("Bar chart: Mars 2, Earth 1")


def test_missing_matplotlib_names_the_charts_extra(tmp_path: Path):
    import subprocess
    import sys

    script = (
        "import sys\n"
        "sys.modules['matplotlib'] = None  # as if the extra were not installed\n"
        "from mimir.errors import MissingExtraError\n"
        "from mimir.tutor.graph import ChartData, draw_chart, find_chart_data\n"
        "assert find_chart_data('A=3, B=5') is not None  # parsing needs no matplotlib\n"
        "try:\n"
        f"    draw_chart(ChartData('bar', ('a', 'b'), (1.0, 2.0)), {str(tmp_path)!r})\n"
        "except MissingExtraError as exc:\n"
        "    print(exc.extra)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "charts"


def test_importing_the_tutor_parts_does_not_import_matplotlib():
    import subprocess
    import sys

    script = (
        "import sys\n"
        "import mimir.tutor.graph, mimir.tutor.rules, mimir.tutor.prompts, mimir.tutor.postprocess\n"
        "import mimir.tutor.text, mimir.tutor.evaluation\n"
        "print('matplotlib' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
