"""The package layering of ``docs/architecture.md``, checked from the source.

The import graph between Mimir's top-level parts (``mimir/<package>/`` and ``mimir/<module>.py``)
is built with :mod:`ast` from every ``import`` statement, including those inside functions and
under ``if TYPE_CHECKING:`` (a type is a dependency too). Nothing is imported, so this runs
without the optional extras. Two rules:

- no cycles between parts;
- every import goes down the layers below (same layer only through the listed exceptions).
  A new top-level part must be given a layer here and in ``docs/architecture.md``.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "mimir"

#: Bottom first. A part may import parts of lower layers only.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("units", "redact"),
    ("errors", "core"),
    ("models", "ops_options", "auth", "mathcheck"),
    ("storage",),
    ("config",),
    ("cache", "runtime"),
    ("telemetry", "inventory"),
    ("tutor",),
    ("app",),
    ("ops",),
    ("api", "ui", "cli"),
)

#: Same-layer imports that are allowed, by importing module: the web app mounts the API, and
#: ``mimir serve`` starts the web app. Nothing else in one edge may use another edge.
SAME_LAYER_EXCEPTIONS: dict[str, set[str]] = {
    "mimir.ui.app": {"api"},
    "mimir.cli.serve": {"ui"},
}

#: Parts that may import nothing from Mimir but these (``core`` is the shared leaf).
LEAVES: dict[str, set[str]] = {"units": set(), "redact": set(), "errors": {"units", "redact"}, "core": {"units"}}


def _module_name(path: Path, root: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts = parts[:-1]
    return ".".join(parts), is_package


def _is_part(root: Path, name: str) -> bool:
    return (root / f"{name}.py").is_file() or (root / name / "__init__.py").is_file()


def import_edges(root: Path = SRC) -> list[tuple[str, str, str]]:
    """``(importing module, importing part, imported part)`` for each cross-part import."""
    edges = []
    for path in sorted(root.rglob("*.py")):
        module, is_package = _module_name(path, root)
        part = module.split(".")[1] if "." in module else ""
        package = module.split(".") if is_package else module.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package[: len(package) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                targets = [target]
                if target == "mimir":  # from mimir import config (not: from mimir import __version__)
                    targets = [f"mimir.{a.name}" for a in node.names if _is_part(root, a.name)]
            for target in targets:
                bits = target.split(".")
                if bits[0] == "mimir" and len(bits) > 1 and bits[1] != part:
                    edges.append((module, part, bits[1]))
    return edges


def part_graph(edges: list[tuple[str, str, str]]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for _, src, dst in edges:
        graph[src].add(dst)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def layering_violations(edges: list[tuple[str, str, str]]) -> list[str]:
    rank = {part: i for i, layer in enumerate(LAYERS) for part in layer}
    out = []
    for module, src, dst in edges:
        if src not in rank or dst not in rank:
            out.append(f"{module}: '{src if src not in rank else dst}' has no layer in LAYERS")
        elif src in LEAVES and dst not in LEAVES[src]:
            out.append(f"{module} imports mimir.{dst}, but '{src}' may import only {sorted(LEAVES[src]) or 'nothing'}")
        elif rank[dst] > rank[src]:
            out.append(f"{module} imports mimir.{dst}, a higher layer")
        elif rank[dst] == rank[src] and dst not in SAME_LAYER_EXCEPTIONS.get(module, set()):
            out.append(f"{module} imports mimir.{dst}, in its own layer")
    return sorted(set(out))


def _parts(root: Path) -> set[str]:
    return {p.stem if p.suffix == ".py" else p.name for p in root.iterdir()
            if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()}


def test_every_part_has_a_layer():
    ranked = {part for layer in LAYERS for part in layer}
    assert _parts(SRC) == ranked


def test_no_cycles_between_packages():
    cycle = find_cycle(part_graph(import_edges()))
    assert cycle is None, "import cycle between packages: " + " -> ".join(cycle or [])


def test_imports_follow_the_documented_layers():
    assert layering_violations(import_edges()) == []


def test_the_documented_diagram_names_every_layer():
    text = (SRC.parents[1] / "docs" / "architecture.md").read_text(encoding="utf-8")
    for layer in LAYERS:
        for part in layer:
            assert f"{part}/" in text or f"{part}.py" in text, f"docs/architecture.md does not show {part}"


# -- the checker itself catches what it must, on a real copy of the tree ----------------------


def _copy_tree(tmp_path: Path) -> Path:
    root = tmp_path / "mimir"
    for path in SRC.rglob("*.py"):
        dest = root / path.relative_to(SRC)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    return root


@pytest.mark.parametrize(
    "file, line, expected",
    [
        # the cycles this layering removed, put back one at a time
        ("storage/db.py", "from mimir.telemetry.recorder import Telemetry", ["storage", "telemetry"]),
        ("models/base.py", "from mimir.runtime.probe import process_footprint", ["models", "runtime"]),
        ("models/hf_source.py", "from mimir.cache.scan import scan_cache", ["cache", "config", "models"]),
        ("config.py", "from mimir.telemetry.probes import default_probes", ["config", "telemetry"]),
        # a lazy import inside a function counts too
        ("core/records.py", "def f():\n    from ..storage import db\n", ["core", "storage"]),
    ],
)
def test_a_reintroduced_cycle_fails(tmp_path, file, line, expected):
    root = _copy_tree(tmp_path)
    target = root / file
    target.write_text(target.read_text(encoding="utf-8") + "\n" + line + "\n", encoding="utf-8")
    cycle = find_cycle(part_graph(import_edges(root)))
    assert cycle is not None and set(expected) <= set(cycle)
    assert layering_violations(import_edges(root))


def test_an_edge_using_another_edge_fails(tmp_path):
    root = _copy_tree(tmp_path)
    ask = root / "cli" / "ask.py"
    ask.write_text(ask.read_text(encoding="utf-8") + "\nfrom mimir.ui.render import steps_table\n", encoding="utf-8")
    assert layering_violations(import_edges(root)) == ["mimir.cli.ask imports mimir.ui, in its own layer"]
    assert find_cycle(part_graph(import_edges(root))) is None  # not a cycle, still refused
