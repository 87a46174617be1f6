"""Telemetry benchmark: what one step record costs, and whether a turn notices it.

Run: ``.venv/bin/python bench/bench_telemetry.py`` (``--quick`` for a short run).

Prints two tables, everything measured in this run on this machine:

1. **Cost of one step record** (microseconds per step, an empty step body, the **median** of
   5 rounds of ``--steps`` steps followed by ``flush()``, the cost of an empty loop
   subtracted), as **process CPU time** (every thread of the process: the RSS sampler thread
   and the SQLite writer thread are counted, not only the thread that runs the steps) and as
   wall time, for growing configurations: no probes; each probe alone; all available probes;
   all probes plus the RSS sampler thread (10 ms interval); plus the log and SQLite sinks.
   For comparison: one ``psutil`` RSS reading, and one real ``nvidia-smi`` memory query (the
   per-step call the original made) when ``nvidia-smi`` exists here; when it does not, the
   table says so instead of comparing with anything else.
   Target: all probes + sampler + sinks under 50 us of CPU per step.
2. **Turn time with telemetry on vs off**: the same turn (four routing decisions by
   ``score_choices`` and one 16-token answer, on the bundled SmolLM2-135M through llama.cpp on
   one thread) run alternately with and without telemetry, median of ``--turns`` each, as
   process CPU time (all threads, the sampler's included) and as wall time.
   Target: on/off within 1%.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import psutil

from mimir.storage.db import Database
from mimir.storage.telemetry_store import TelemetryStore
from mimir.telemetry import CudaProbe, LogSink, NvmlProbe, ProcessProbe, SqliteSink, Telemetry, default_probes
from mimir.core.gpu import gpu_memory_via_smi, read_gpu_memory


@dataclass(frozen=True)
class Cost:
    """Per-call cost: process CPU time (all threads) and wall time, in microseconds."""

    cpu_us: float
    wall_us: float

    def __sub__(self, other: Cost) -> Cost:
        return Cost(self.cpu_us - other.cpu_us, self.wall_us - other.wall_us)


def per_call(fn, n: int, rounds: int = 5) -> Cost:
    """Median over ``rounds`` of ``fn(n)``, per call. ``time.process_time`` counts every
    thread of this process, so background threads' work during the round is included."""
    cpu, wall = [], []
    for _ in range(rounds):
        c0, t0 = time.process_time(), time.perf_counter()
        fn(n)
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - t0)
    return Cost(statistics.median(cpu) / n * 1e6, statistics.median(wall) / n * 1e6)


def nvidia_smi_query_us(k: int = 20) -> float | None:
    """Wall time of one real ``nvidia-smi`` memory query (the command Mimir runs), or None
    when ``nvidia-smi`` is not installed here. Wall time: the work is in a child process."""
    if shutil.which("nvidia-smi") is None:
        return None
    times = []
    for _ in range(k):
        t0 = time.perf_counter()
        gpu_memory_via_smi()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


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
    empty = per_call(steps_loop(None), n)
    rows: list[tuple[str, Cost]] = []

    def measure(label: str, tel: Telemetry) -> Telemetry:
        rows.append((label, per_call(steps_loop(tel), n) - empty))
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

    turn = per_call(turns_of_ten, max(10, n // 100)) - Cost(10 * empty.cpu_us, 10 * empty.wall_us)
    tel.close()
    # Writer throughput measured on its own: write `stored` records straight through the store.
    records = store.recent_steps(last_turns=2000)[:2000]
    t0 = time.perf_counter()
    for r in records:
        store.save_step(r.__class__(**{**r.__dict__, "step_id": r.step_id + "-copy"}))
    write_us = (time.perf_counter() - t0) / max(1, len(records)) * 1e6
    db.close()

    proc = psutil.Process()
    psutil_cost = per_call(lambda k: [proc.memory_info() for _ in range(k)], max(1000, n // 10))
    smi_us = nvidia_smi_query_us()

    target = 50.0
    print("\n## Cost of one step record (empty step body; median of 5 rounds; empty-loop cost subtracted)\n")
    print("CPU = process CPU time, all threads (the sampler and the SQLite writer included)")
    smi_col = "CPU/smi" if smi_us else ""
    print(f"{'configuration':<52} {'CPU us':>8} {'wall us':>8} {smi_col:>8}")
    print("-" * 80)

    def line(label: str, cost: Cost) -> None:
        ratio = f"{cost.cpu_us / smi_us:>8.4f}" if smi_us else ""
        print(f"{label:<52} {cost.cpu_us:>8.1f} {cost.wall_us:>8.1f} {ratio:>8}")

    for label, cost in rows:
        line(label, cost)
    line("one turn of 10 steps, everything on (per step)", Cost(turn.cpu_us / 10, turn.wall_us / 10))
    print("-" * 80)
    line("reference: psutil memory_info() (one RSS reading)", psutil_cost)
    if smi_us:
        print(f"{'reference: one real nvidia-smi memory query (wall)':<52} {'':>8} {smi_us:>8.1f} {1:>8.4f}")
    else:
        print("reference: nvidia-smi is absent on this machine: no subprocess query to compare with")
    full = rows[-1][1].cpu_us
    print(
        f"\nall probes + sampler + sinks: {full:.1f} us of CPU per step, target < {target:.0f} us: "
        f"{'MET' if full < target else 'MISSED'}"
        + (f"; {smi_us / full:.0f}x cheaper than one nvidia-smi query" if smi_us else "")
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
