"""Parsing and formatting of byte sizes and durations (``"1.5GiB"``, ``"5m"``)."""

from __future__ import annotations

import re

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")
_DURATION_UNITS = {"": 1.0, "s": 1.0, "ms": 0.001, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str | int | float) -> int:
    """``"1.5GiB"`` -> 1610612736. Raises ``ValueError`` with a readable reason."""
    if isinstance(text, bool):
        raise ValueError("expected a size such as '1.5GiB', got a boolean")
    if isinstance(text, (int, float)):
        if text < 0:
            raise ValueError("a size cannot be negative")
        return int(text)
    m = _SIZE_RE.match(text)
    if not m:
        raise ValueError(f"'{text}' is not a size such as '512MiB' or '1.5GiB'")
    unit = m.group(2).lower()
    if unit not in _SIZE_UNITS:
        raise ValueError(f"unknown size unit '{m.group(2)}' (use B, KiB, MiB, GiB, KB, MB, GB)")
    return int(float(m.group(1)) * _SIZE_UNITS[unit])


def parse_duration(text: str | int | float) -> float:
    """``"5m"`` -> 300.0 seconds; plain numbers are seconds."""
    if isinstance(text, bool):
        raise ValueError("expected a duration such as '5m', got a boolean")
    if isinstance(text, (int, float)):
        if text < 0:
            raise ValueError("a duration cannot be negative")
        return float(text)
    m = _DURATION_RE.match(text)
    if not m or m.group(2).lower() not in _DURATION_UNITS:
        raise ValueError(f"'{text}' is not a duration such as '30s', '5m', '1h' or '30d'")
    return float(m.group(1)) * _DURATION_UNITS[m.group(2).lower()]


def format_bytes(n: int | float | None) -> str:
    """Binary units, one decimal: 1536 -> '1.5KiB'. ``None`` -> '-'."""
    if n is None:
        return "-"
    sign = "-" if n < 0 else ""
    n = abs(float(n))
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            if unit == "B":
                return f"{sign}{int(n)}B"
            return f"{sign}{n:.1f}{unit}"
        n /= 1024
    return f"{sign}{n:.1f}TiB"  # pragma: no cover - loop always returns


def format_delta_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    return ("+" if n >= 0 else "") + format_bytes(n)
