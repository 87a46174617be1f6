"""Model manager benchmark: load time, generation overhead, and peak RSS under a tight budget.

Run: ``.venv/bin/python bench/bench_manager.py`` (or ``make bench``).

Prints one table with three parts, all measured in this run on this machine:

1. load time of the bundled SmolLM2-135M through the manager (and its estimate vs measured);
2. tokens/s through the manager vs raw ``llama_cpp.Llama`` on the same prompt, interleaved
   runs, median; target ratio >= 0.95;
3. two models under a budget that fits only one, used in strict alternation and in a seeded
   random mix where one model is used twice as often as the other: peak RSS (sampled every
   5 ms) above the RSS measured *before any model loaded* (not before this part: memory
   earlier loads left with the allocator would hide part of the peak), against the budget,
   and the loads and evictions; target: peak under budget.
"""

from __future__ import annotations

import argparse
import random
import statistics
import threading
import time
from dataclasses import replace

import psutil

from mimir.config import bundled_model_spec
from mimir.models.base import ChatMessage, GenerationParams
from mimir.runtime.manager import ModelManager
from mimir.units import format_bytes

PROMPT = "Explain what a derivative is in two sentences."
MiB = 1024 * 1024


class PeakSampler:
    def __init__(self, interval_s: float = 0.005):
        self._proc = psutil.Process()
        self._interval = interval_s
        self._stop = threading.Event()
        self.peak = self._proc.memory_info().rss
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def tokens_per_s_raw(llm, max_tokens: int) -> float:
    t0 = time.perf_counter()
    n = 0
    for chunk in llm.create_chat_completion(
        messages=[{"role": "user", "content": PROMPT}], max_tokens=max_tokens, temperature=0, stream=True
    ):
        if chunk["choices"][0]["delta"].get("content"):
            n += 1
    return n / (time.perf_counter() - t0)


def tokens_per_s_managed(manager: ModelManager, max_tokens: int) -> float:
    t0 = time.perf_counter()
    with manager.use("default") as model:
        stream = model.stream([ChatMessage("user", PROMPT)], GenerationParams(max_tokens=max_tokens, temperature=0))
        n = sum(1 for _ in stream)
    return n / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--switches", type=int, default=6)
    args = parser.parse_args()
    rows: list[tuple[str, str, str]] = []

    # 1. load time, estimate vs measured
    spec = bundled_model_spec()
    manager = ModelManager({"default": spec}, budget_ram_bytes=4 * 1024**3)
    manager.estimate("default")  # imports llama.cpp, so the baseline below excludes the library
    baseline_before_load = psutil.Process().memory_info().rss
    t0 = time.perf_counter()
    with manager.use("default"):
        pass
    load_s = time.perf_counter() - t0
    r = manager.status().get("default")
    rows.append(("load bundled model (manager.use, cold)", f"{load_s:.3f} s", ""))
    rows.append(("estimate / measured RSS delta at load", f"{format_bytes(r.estimate_bytes)} / {format_bytes(r.measured_bytes)}",
                 f"ratio {r.estimate_bytes / max(1, r.measured_bytes):.2f}"))
    with manager.use("default") as model:  # a long prompt touches the compute buffer
        model.chat([ChatMessage("user", "word " * 1500)], GenerationParams(max_tokens=100, temperature=0))
    used = psutil.Process().memory_info().rss - baseline_before_load
    rows.append(("estimate / RSS in use after a 1,500-token prompt", f"{format_bytes(r.estimate_bytes)} / {format_bytes(used)}",
                 f"ratio {r.estimate_bytes / max(1, used):.2f}"))

    # 2. tokens/s, manager vs raw llama.cpp, interleaved
    import llama_cpp

    raw = llama_cpp.Llama(
        str(spec.source.local_path()), n_ctx=spec.context_length, n_threads=psutil.cpu_count() or 1,
        n_batch=512, use_mmap=False, verbose=False,
    )
    raw_tps, managed_tps = [], []
    for _ in range(args.runs):
        raw_tps.append(tokens_per_s_raw(raw, args.max_tokens))
        managed_tps.append(tokens_per_s_managed(manager, args.max_tokens))
    raw.close()
    manager.close()
    raw_med, man_med = statistics.median(raw_tps), statistics.median(managed_tps)
    rows.append(("tokens/s raw llama_cpp.Llama (median)", f"{raw_med:.1f}", f"{args.runs} runs"))
    rows.append(("tokens/s through manager (median)", f"{man_med:.1f}",
                 f"ratio {man_med / raw_med:.3f} (target >= 0.95)"))

    # 3. two models under a budget that fits only one: strict alternation, then a random mix
    a = replace(spec, id="a", context_length=2048)
    b = replace(spec, id="b", context_length=1024)
    probe = ModelManager({"a": a, "b": b}, budget_ram_bytes=4 * 1024**3)
    est_a, est_b = probe.estimate("a").total_bytes, probe.estimate("b").total_bytes
    budget = int(max(est_a, est_b) * 1.3)  # room for one, not both
    rng = random.Random(7)
    sequences = {
        "alternating a/b": ["a" if i % 2 == 0 else "b" for i in range(args.switches)],
        # a used twice as often as b, in no fixed pattern
        "random mix a:b = 2:1": [rng.choice("aab") for _ in range(2 * args.switches)],
    }
    rows.append(("two models: budget (fits one)", format_bytes(budget),
                 f"estimates a={format_bytes(est_a)} b={format_bytes(est_b)}"))
    for label, sequence in sequences.items():
        m = ModelManager({"a": a, "b": b}, budget_ram_bytes=budget)
        with PeakSampler() as sampler:
            for model_id in sequence:
                with m.use(model_id) as model:
                    model.chat([ChatMessage("user", "Hi")], GenerationParams(max_tokens=8, temperature=0))
        st = m.status()
        m.close()
        peak = sampler.peak - baseline_before_load
        switches = sum(1 for x, y in zip(sequence, sequence[1:]) if x != y)
        rows.append((f"{label}: peak RSS above the pre-load baseline", format_bytes(peak),
                     f"{'under' if peak <= budget else 'OVER'} budget ({peak / budget:.2f} of it)"))
        rows.append((f"{label}: loads / evictions", f"{st.loads} / {st.evictions}",
                     f"{len(sequence)} uses (a {sequence.count('a')}, b {sequence.count('b')}), {switches} switches"))

    width = max(len(r[0]) for r in rows)
    print(f"{'measure'.ljust(width)} | {'value':>22} | note")
    print("-" * (width + 50))
    for name, value, note in rows:
        print(f"{name.ljust(width)} | {value:>22} | {note}")


if __name__ == "__main__":
    main()
