"""The Memory tab's timeline drawn with Matplotlib, from :class:`~mimir.ui.render.Timeline`.

Figures are built with ``matplotlib.figure.Figure`` (no pyplot): no global state, so the
server's request threads can draw at the same time.

A budget far above the measured memory (the usual case: ``auto`` grants 80% of free RAM)
would flatten the steps into one line at the bottom, so then the y axis is broken in two:
a thin band around the budget line on top, the steps at their own scale below.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mimir.errors import MissingExtraError
from mimir.units import format_bytes

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from mimir.ui.render import Timeline

MiB = 1024 * 1024
#: Break the axis when the highest budget line is more than this many times the data's top.
BREAK_RATIO = 2.5
_EVENT_MARKERS = {"load": ("^", "tab:green"), "evict": ("v", "tab:red"), "unload": ("v", "tab:orange"),
                  "load_failed": ("x", "tab:red")}


def budget_lines(tl: Timeline) -> list[tuple[float, str, str]]:
    """``(MiB, label, color)`` of the budget lines to draw."""
    lines = []
    if tl.budget_ram_bytes:
        lines.append((tl.budget_ram_bytes / MiB, f"RAM budget {format_bytes(tl.budget_ram_bytes)}", "tab:red"))
    if tl.budget_gpu_bytes and tl.has_gpu:
        lines.append((tl.budget_gpu_bytes / MiB, f"GPU budget {format_bytes(tl.budget_gpu_bytes)}", "tab:purple"))
    return lines


def data_top_mib(tl: Timeline) -> float:
    values = [v for p in tl.points for v in (p.rss_after_bytes, p.rss_peak_bytes, p.gpu_bytes) if v is not None]
    return max(values) / MiB if values else 0.0


def needs_break(tl: Timeline) -> bool:
    lines = budget_lines(tl)
    top = data_top_mib(tl)
    return bool(lines and top > 0 and max(v for v, _, _ in lines) > BREAK_RATIO * top)


def timeline_figure(tl: Timeline, *, width_in: float = 10.0, height_in: float = 3.8) -> Figure:
    """Per-step RSS after and peak (MiB) with the RAM budget as a horizontal line; GPU memory
    and the GPU budget when present; turn boundaries dotted; load/evict events marked."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise MissingExtraError("matplotlib", "ui", "The memory timeline") from None

    fig = Figure(figsize=(width_in, height_in), dpi=100, layout="constrained")
    lines = budget_lines(tl)
    if needs_break(tl):
        top_ax, ax = fig.subplots(2, 1, sharex=True, height_ratios=[1, 5])
        lows = [v for v, _, _ in lines if v > BREAK_RATIO * data_top_mib(tl)]
        top_ax.set_ylim(min(lows) * 0.97, max(lows) * 1.03)
        top_ax.spines["bottom"].set_visible(False)
        top_ax.tick_params(axis="x", bottom=False)
        ax.spines["top"].set_visible(False)
        ax.set_ylim(0, data_top_mib(tl) * 1.3)
        for axis, y in ((top_ax, 0), (ax, 1)):  # the "//" marks of a broken axis
            axis.plot([0, 1], [y, y], transform=axis.transAxes, marker=[(-1, -0.6), (1, 0.6)], markersize=10,
                      linestyle="none", color="k", mec="k", mew=1, clip_on=False)
        top_ax.set_title("Memory per step, recent turns (dotted lines separate turns; axis broken below the budget)",
                         fontsize=10)
        axes = [top_ax, ax]
    else:
        ax = fig.add_subplot()
        ax.set_title("Memory per step, recent turns (dotted lines separate turns)", fontsize=10)
        axes = [ax]
    ax.set_ylabel("MiB")
    for axis in axes:
        for value, label, color in lines:
            axis.axhline(value, color=color, linewidth=1.5, label=label if axis is axes[0] else None)
    if tl.is_empty:
        ax.text(0.5, 0.5, "No steps recorded yet: ask the tutor something in the Chat tab.",
                ha="center", va="center", transform=ax.transAxes)
        ax.set_xticks([])
    else:
        _draw_steps(ax, tl)
    if len(axes) == 1:
        ax.set_ylim(bottom=0)
    handles, labels = [], []
    for axis in axes:
        axis.grid(axis="y", alpha=0.3)
        h, lab = axis.get_legend_handles_labels()
        handles += h
        labels += lab
    if handles:
        axes[-1].legend(handles, labels, loc="upper left", fontsize=8, ncols=3)
    return fig


def _draw_steps(ax: Axes, tl: Timeline) -> None:
    xs = [p.index for p in tl.points]

    def series(values):
        return [None if v is None else v / MiB for v in values]

    ax.plot(xs, series(p.rss_after_bytes for p in tl.points), marker="o", markersize=3, label="RSS after step")
    ax.plot(xs, series(p.rss_peak_bytes for p in tl.points), linestyle="--", label="RSS peak in step")
    if tl.has_gpu:
        ax.plot(xs, series(p.gpu_bytes for p in tl.points), marker="s", markersize=3, label="GPU memory after step")
    for start in tl.turn_starts:
        ax.axvline(start - 0.5, color="grey", linestyle=":", linewidth=1)
    seen: set[str] = set()
    for p in tl.points:
        for event in p.events:
            kind = event.split(" ", 1)[0]
            marker, color = _EVENT_MARKERS.get(kind, ("d", "black"))
            ax.scatter([p.index], [(p.rss_after_bytes or 0) / MiB], marker=marker, color=color, s=60, zorder=3,
                       label=f"model {kind}" if kind not in seen else None)
            seen.add(kind)
    ax.set_xticks(xs, [p.label for p in tl.points], rotation=60, ha="right", fontsize=7)
    ax.set_xlim(-0.5, len(xs) - 0.5)
