"""Telemetry benchmark: what one step record costs, and whether a turn notices it.

Run: ``.venv/bin/python bench/bench_telemetry.py`` (``--quick`` for a short run).

Prints two tables, everything measured in this run on this machine:

1. **Cost of one step record** (microseconds per step, an empty step body, best of 5 rounds
   of ``--steps`` steps followed by ``flush()``, the cost of an empty loop subtracted) for
   growing configurations: no probes; each probe alone; all available probes; all probes plus
   the RSS sampler thread (its interval is not counted: the steps are shorter than one
   interval, so the cost shown is opening and closing its window); plus the log and SQLite
   sinks (the generating thread only does a ``queue.put``; the writer thread's work, batched
   transactions, is inside the time because each round waits for it). For comparison: one ``psutil`` RSS reading, and spawning ``true`` as a subprocess
   (the floor of the per-step ``nvidia-smi`` call the original made).
   Target: all probes + sampler + sinks under 50 us per step.
2. **Turn time with telemetry on vs off**: the same turn (four routing decisions by
   ``score_choices`` and one 16-token answer, on the bundled SmolLM2-135M through llama.cpp on
   one thread) run alternately with and without telemetry, median of ``--turns`` each, as
   process CPU time (all threads, the sampler's included) and as wall time.
   Target: on/off within 1%.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import subprocess
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import psutil

from mimir.storage.db import Database
from mimir.storage.telemetry_store import TelemetryStore
from mimir.telemetry import CudaProbe, LogSink, NvmlProbe, ProcessProbe, SqliteSink, Telemetry, default_probes
from mimir.core.gpu import read_gpu_memory


def per_call_us(fn, n: int, rounds: int = 5) -> float:
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn(n)
        best = min(best, time.perf_counter() - t0)
    return best / n * 1e6


def steps_loop(tel: Telemetry | None):
    if tel is None:
        def run(n: int) -> None:
            for _ in range(n):
                with nullcontext():
                    pass
    else:
        def run(n: int) -> None:
            for _ in range(n):
                with tel.step("routing", agent="agent_2", model="default"):
                    pass
            tel.flush()  # the writer threads' work counts too
    return run


def step_cost_table(n: int, db_dir: Path) -> None:
    empty = per_call_us(steps_loop(None), n)
    rows: list[tuple[str, float]] = []

    def measure(label: str, tel: Telemetry) -> Telemetry:
        rows.append((label, per_call_us(steps_loop(tel), n) - empty))
        return tel

    measure("step, no probes, no sinks", Telemetry(probes=[], sample_interval_s=None)).close()
    measure("  + process probe (RSS, high-water, available)", Telemetry(probes=[ProcessProbe()], sample_interval_s=None)).close()
    measure("  cuda probe alone (torch not imported)", Telemetry(probes=[CudaProbe()], sample_interval_s=None)).close()
    measure("  nvml probe alone", Telemetry(probes=[NvmlProbe()], sample_interval_s=None)).close()
    measure("all probes", Telemetry(probes=default_probes(), sample_interval_s=None)).close()
    measure("all probes + RSS sampler (10 ms)", Telemetry(probes=default_probes(), sample_interval_s=0.01)).close()
    logging.getLogger("mimir.telemetry").setLevel(logging.WARNING)
    measure(
        "all probes + sampler + log sink (INFO off)",
        Telemetry(probes=default_probes(), sinks=[LogSink()], sample_interval_s=0.01),
    ).close()

    db = Database.open(db_dir / "bench.db")
    store = TelemetryStore(db)
    sink = SqliteSink(store)
    tel = measure(
        "all probes + sampler + log + SQLite sinks",
        Telemetry(probes=default_probes(), sinks=[LogSink(), sink], sample_interval_s=0.01),
    )
    stored = store.count_steps()

    def turns_of_ten(k: int) -> None:
        for _ in range(k):
            with tel.turn(turn_id="bench"):
                for _ in range(10):
                    with tel.step("routing"):
                        pass

        tel.flush()

    turn_us = per_call_us(turns_of_ten, max(10, n // 100)) - 10 * empty
    tel.close()
    # Writer throughput measured on its own: write `stored` records straight through the store.
    records = store.recent_steps(last_turns=2000)[:2000]
    t0 = time.perf_counter()
    for r in records:
        store.save_step(r.__class__(**{**r.__dict__, "step_id": r.step_id + "-copy"}))
    write_us = (time.perf_counter() - t0) / max(1, len(records)) * 1e6
    db.close()

    proc = psutil.Process()
    psutil_us = per_call_us(lambda k: [proc.memory_info() for _ in range(k)], max(1000, n // 10))
    spawn_us = per_call_us(lambda k: [subprocess.run(["true"], check=True) for _ in range(k)], 50, rounds=3)

    target = 50.0
    print("\n## Cost of one step record (empty step body; empty-loop cost subtracted)\n")
    print(f"{'configuration':<52} {'us/step':>9} {'vs spawn':>9}")
    print("-" * 72)
    for label, us in rows:
        print(f"{label:<52} {us:>9.1f} {us / spawn_us:>9.4f}")
    print(f"{'one turn of 10 steps, everything on (per step)':<52} {turn_us / 10:>9.1f} {turn_us / 10 / spawn_us:>9.4f}")
    print("-" * 72)
    print(f"{'reference: psutil memory_info() (one RSS reading)':<52} {psutil_us:>9.1f} {psutil_us / spawn_us:>9.4f}")
    print(f"{'reference: spawn `true` (floor of one nvidia-smi)':<52} {spawn_us:>9.1f} {1:>9.4f}")
    full = rows[-1][1]
    print(
        f"\nall probes + sampler + sinks: {full:.1f} us/step, target < {target:.0f} us: "
        f"{'MET' if full < target else 'MISSED'}; {spawn_us / full:.0f}x cheaper than one subprocess"
    )
    print(
        f"SQLite: {stored} records stored; rows above include the writer thread's work (each loop "
        f"ends with flush()); one step written alone in its own transaction: {write_us:.0f} us"
    )
    print(f"GPU probes here: NVML {'present' if read_gpu_memory() else 'absent'}, torch CUDA not in use")


def turn_table(turns: int, db_dir: Path) -> None:
    from dataclasses import replace

    from mimir.config import bundled_model_spec
    from mimir.models.base import ChatMessage, GenerationParams
    from mimir.runtime.manager import ModelManager

    # One llama.cpp thread: the same work every turn, so CPU time compares cleanly even on a
    # busy machine (wall time is printed too; on a shared machine it is the noisier one).
    spec = replace(bundled_model_spec(), threads=1)
    manager = ModelManager({"default": spec}, budget_ram_bytes=2 * 1024**3)
    db = Database.open(db_dir / "turns.db")
    tel = Telemetry(sinks=[LogSink(), SqliteSink(TelemetryStore(db))])
    tel.attach(manager)
    question = [ChatMessage("user", "Can you make practice questions about derivatives?")]
    params = GenerationParams(max_tokens=16, temperature=0.0, seed=7)

    def turn(on: bool) -> tuple[float, float]:
        step = tel.step if on else (lambda *a, **k: nullcontext())
        t0, c0 = time.perf_counter(), time.process_time()
        with (tel.turn(session_id="bench") if on else nullcontext()):
            for agent in ("agent_1", "agent_2", "agent_3", "agent_4"):
                with step("routing", agent=agent, model="default"):
                    with manager.use("default") as model:
                        model.score_choices(question, ["YES", "NO"])
            with step("response", agent="response", model="default"):
                with manager.use("default") as model:
                    model.chat(question, params)
        return time.perf_counter() - t0, time.process_time() - c0

    turn(True)  # load and warm up
    turn(False)
    runs: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    for i in range(turns):
        for flag in ((True, False) if i % 2 == 0 else (False, True)):
            runs[flag].append(turn(flag))
    tel.flush()
    load_avg = psutil.getloadavg()[0]
    tel.close()
    manager.close()
    db.close()

    def summary(values: list[float]) -> tuple[float, float, float, float]:
        med = statistics.median(values)
        q = statistics.quantiles(values, n=4) if len(values) >= 4 else [med, med, med]
        return med, min(values), max(values), (q[2] - q[0]) / med

    print(
        f"\n## Turn time with telemetry on vs off (bundled SmolLM2-135M on 1 thread, 4 routing steps "
        f"+ 16-token answer; {turns} turns per arm, interleaved; load average {load_avg:.1f} on "
        f"{psutil.cpu_count()} CPUs)\n"
    )
    print(f"{'measure':<16} {'telemetry':<10} {'median s':>9} {'min s':>8} {'max s':>8} {'IQR/med':>8}")
    print("-" * 64)
    ratios = {}
    for idx, label in ((1, "process CPU time"), (0, "wall time")):
        for flag in (False, True):
            med, lo, hi, iqr = summary([r[idx] for r in runs[flag]])
            print(f"{label:<16} {'on' if flag else 'off':<10} {med:>9.3f} {lo:>8.3f} {hi:>8.3f} {iqr:>8.1%}")
        ratios[label] = statistics.median([r[idx] for r in runs[True]]) / statistics.median([r[idx] for r in runs[False]])
    for label, ratio in ratios.items():
        print(f"\non/off {label}: {ratio:.4f} (target within 1%: {'MET' if abs(ratio - 1) <= 0.01 else 'MISSED'})", end="")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20000, help="steps per round in table 1")
    parser.add_argument("--turns", type=int, default=12, help="turns per arm in table 2")
    parser.add_argument("--quick", action="store_true", help="fewer steps and turns")
    parser.add_argument("--skip-turns", action="store_true", help="only table 1 (no model)")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.turns = 2000, 4
    with tempfile.TemporaryDirectory() as tmp:
        step_cost_table(args.steps, Path(tmp))
        if not args.skip_turns:
            turn_table(args.turns, Path(tmp))


if __name__ == "__main__":
    main()
