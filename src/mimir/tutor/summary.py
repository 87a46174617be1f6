"""The one-line summary under an answer, shared by ``mimir ask``/``chat`` and the web app."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from mimir.units import format_bytes

if TYPE_CHECKING:
    from mimir.tutor.pipeline import TurnResult


def status_line(
    *,
    wall_s: float | None,
    tokens_in: int | None,
    tokens_out: int | None,
    flags: Sequence[str],
    peak_rss_bytes: int | None,
    cuda_peak_bytes: int | None = None,
) -> str:
    """The small line under an answer: time, tokens, active prompt segments, peak memory."""
    parts = ["time -" if wall_s is None else f"{wall_s:.1f}s"]
    parts.append(f"{tokens_in if tokens_in is not None else '-'} tokens in, {tokens_out if tokens_out is not None else '-'} out")
    parts.append("segments: " + (", ".join(flags) if flags else "none"))
    parts.append(f"peak RSS {format_bytes(peak_rss_bytes)}")
    if cuda_peak_bytes is not None:
        parts.append(f"CUDA peak {format_bytes(cuda_peak_bytes)}")
    return " · ".join(parts)


def turn_status_line(result: TurnResult) -> str:
    """:func:`status_line` for a :class:`~mimir.tutor.pipeline.TurnResult`."""
    rec = result.telemetry
    return status_line(
        wall_s=rec.wall_s,
        tokens_in=rec.tokens_in,
        tokens_out=rec.tokens_out,
        flags=result.flags,
        peak_rss_bytes=rec.peak_rss_bytes,
        cuda_peak_bytes=rec.cuda_peak_allocated_bytes,
    )
