"""Worst time per text function on adversarial inputs (linear-time text handling).

Run: ``.venv/bin/python bench/bench_text.py [--size 100000] [--json]``

Every function that runs patterns on student, history or model text (``tests/adversarial_text.py``
lists them) gets every adversarial input of ``--size`` characters: each atom a pattern reacts to
repeated, followed by a long run, or alternating with a filler. The table shows, per function,
the worst time, the input that caused it, and that time divided by one plain regex scan of the
same input measured in the same run (``\\w+``), so a loaded machine shows in both columns.
Each time is the best of ``--repeat`` runs (3 by default), as ``timeit`` advises: a run can only be
slowed by other work on the machine, never sped up, so the best run is the function's own cost.
Target: < 50 ms each at 100 KB. A pattern that backtracks quadratically shows up as seconds.

The last row is the request that froze the server before: an API history holding an assistant
message of 20,000 newlines, through the whole decision phase (cleaning + rules).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from adversarial_text import TEXT_FUNCTIONS, adversarial_inputs  # noqa: E402

from mimir.models.base import ChatMessage  # noqa: E402
from mimir.tutor import rules, text  # noqa: E402

TARGET_S = 0.050
_SCAN = re.compile(r"\w+")


def _time(fn, arg, repeat: int = 1) -> float:
    """The best of ``repeat`` runs of ``fn(arg)``, in seconds."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn(arg)
        best = min(best, time.perf_counter() - start)
    return best


def _newline_request() -> None:
    history = text.clean_history([ChatMessage("user", "help"), ChatMessage("assistant", "\n" * 20000)])
    message = text.clean_user_text("I think it is 4").text
    rules.decide_flags(message, history)


def run(size: int, only: str | None = None, repeat: int = 3) -> list[dict]:
    inputs = adversarial_inputs(size)
    scan = {name: _time(_SCAN.findall, s, repeat) for name, s in inputs.items()}
    rows = []
    for fname, fn in TEXT_FUNCTIONS.items():
        if only and only not in fname:
            continue
        worst_s, worst_input = 0.0, ""
        for name, s in inputs.items():
            elapsed = _time(fn, s, repeat)
            if elapsed > worst_s:
                worst_s, worst_input = elapsed, name
        rows.append({
            "function": fname, "worst_s": worst_s, "input": worst_input,
            "vs_scan": worst_s / max(scan[worst_input], 1e-9),
        })
    rows.append({"function": "20 KB newline history (clean + rules)", "worst_s": _time(lambda _: _newline_request(), None, repeat),
                 "input": "'\\n' * 20000", "vs_scan": float("nan")})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=100_000, help="characters per input (default 100000)")
    parser.add_argument("--only", help="only functions whose name holds this text (e.g. postprocess)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per input; the best counts (default 3)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args()
    rows = run(args.size, args.only, max(1, args.repeat))
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"worst time per function over {len(adversarial_inputs(args.size))} adversarial inputs of "
          f"{args.size:,} characters, best of {max(1, args.repeat)} runs each (target < {TARGET_S * 1000:.0f} ms)\n")
    print(f"{'function':42} {'worst ms':>9} {'x scan':>7}  {'ok':3} input")
    for r in rows:
        ok = "yes" if r["worst_s"] < TARGET_S else "NO"
        ratio = "" if r["vs_scan"] != r["vs_scan"] else f"{r['vs_scan']:.0f}"
        print(f"{r['function']:42} {r['worst_s'] * 1000:9.1f} {ratio:>7}  {ok:3} {r['input']}")


if __name__ == "__main__":
    main()
