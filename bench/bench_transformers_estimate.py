"""Estimate vs measured memory of a transformers model, across dtypes, side by side.

Builds a random Llama (no hub access; shape set by --hidden/--layers) in a temporary Hugging
Face cache, then for each row runs a fresh Python process that goes through the model
manager exactly as the app does: estimate (headers only) -> load (measured: RSS delta on the
CPU, CUDA allocated delta on a GPU) -> one full-context turn (peak) -> unload (freed, and
what stays behind). Rows: float32 and bfloat16 on the CPU; float16 and 4-bit on CUDA when
there is a GPU (4-bit needs the ``quant`` extra).

    .venv/bin/python bench/bench_transformers_estimate.py            # ~90M parameters
    .venv/bin/python bench/bench_transformers_estimate.py --layers 2 --hidden 512   # quick

Columns: ``load`` is what the manager measured for the load; ``load/weights`` over the
estimated weights (near 1.0: the header-based weight estimate is right). ``load peak`` is the
highest memory during the load (CPU: the kernel's RSS high-water mark, reset through
``/proc/self/clear_refs``; CUDA: max allocated), ``turn peak`` the highest during one turn
whose prompt fills most of the context, both relative to before the load; ``peak/total`` is
the turn peak over the whole estimate (at most 1.0: the budget reservation was enough).
``admitted`` is what the manager required free before the load (the estimate's total, or
the load's own peak when that is higher: ``MemoryEstimate.admission_bytes``), and
``load peak/admitted`` the measured load peak over it (at most 1.0: the load stayed inside
what the budget reserved for it). ``freed`` is what the unload gave back, ``left`` what
stayed after it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
MiB = 1024 * 1024


def reset_rss_peak() -> None:
    """Linux: writing 5 to clear_refs resets the kernel's RSS high-water mark (VmHWM)."""
    Path("/proc/self/clear_refs").write_text("5")


def rss_peak_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def measure_row(dtype: str, device: str, quantization: str | None, context_length: int, mmap: bool = False) -> dict:
    """Runs in a fresh process (HF_HUB_CACHE already points at the built model)."""
    from mimir.models.base import ChatMessage, GenerationParams
    from mimir.models.spec import ModelSource, ModelSpec
    from mimir.runtime.manager import ModelManager
    from mimir.core.memory import process_rss_bytes
    from tiny_hf import TINY_REPO

    options = {"device": device, "dtype": dtype}
    if mmap:
        options["use_mmap"] = True
    if quantization:
        options["quantization"] = quantization
    spec = ModelSpec("bench", "transformers", ModelSource("hf", TINY_REPO, revision="main"), context_length=context_length, options=options)
    manager = ModelManager({"bench": spec}, budget_ram_bytes=64 * 1024**3, budget_gpu_bytes=None)
    events = []
    manager.subscribe(events.append)
    estimate = manager.estimate("bench")
    gpu = estimate.device == "gpu"
    torch = sys.modules["torch"]
    rss_start = process_rss_bytes()
    if gpu:
        torch.cuda.reset_peak_memory_stats()
        cuda_start = torch.cuda.memory_allocated()
    reset_rss_peak()
    with manager.use("bench") as model:
        load_measured = manager.status().get("bench").measured_bytes
        if gpu:
            load_peak = torch.cuda.max_memory_allocated() - cuda_start
            torch.cuda.reset_peak_memory_stats()
        else:
            load_peak = rss_peak_bytes() - rss_start
            reset_rss_peak()
        words = "practice questions help students learn the method step by step "
        prompt = (words * context_length)[: context_length * 2]
        completion = model.chat([ChatMessage("user", prompt)], GenerationParams(max_tokens=16, temperature=0))
        if gpu:
            peak = torch.cuda.max_memory_allocated() - cuda_start
        else:
            peak = rss_peak_bytes() - rss_start
    manager.unload("bench")
    freed = next(e.measured_bytes for e in events if e.kind == "unload")
    left = (torch.cuda.memory_allocated() - cuda_start) if gpu else (process_rss_bytes() - rss_start)
    manager.close()
    return {
        "device": "cuda" if gpu else "cpu",
        "dtype": dtype + (f"+{quantization}" if quantization else "") + (" mmap" if mmap else ""),
        "weights": estimate.weights_bytes,
        "kv": estimate.kv_cache_bytes,
        "overhead": estimate.overhead_bytes,
        "total": estimate.total_bytes,
        "admitted": estimate.admission_bytes,
        "load": load_measured,
        "load_peak": load_peak,
        "peak": peak,
        "freed": freed,
        "left": left,
        "tokens_in": completion.tokens_in,
    }


def build(cache: Path, hidden: int, layers: int) -> int:
    from tiny_hf import TinyShape, build_tiny_llama, install_in_cache, model_files

    heads = max(1, hidden // 64)
    shape = TinyShape(
        hidden_size=hidden,
        intermediate_size=int(hidden * 2.75) // 8 * 8,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=max(1, heads // 4),
    )
    with tempfile.TemporaryDirectory() as tmp:
        files = model_files(build_tiny_llama(Path(tmp) / "model", shape))
    install_in_cache(cache, files)
    return sum(len(v) for k, v in files.items() if k.endswith(".safetensors"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--context", type=int, default=1024)
    parser.add_argument("--row", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.row:
        dtype, device, quant, mmap = args.row.split(",")
        print(json.dumps(measure_row(dtype, device, quant or None, args.context, mmap == "mmap")))
        return

    import torch

    # "mmap": use_mmap = true, where transformers converts the dtype in one go (the estimate
    # then counts the whole file in the load's peak).
    rows = [("float32", "cpu", "", ""), ("bfloat16", "cpu", "", ""), ("bfloat16", "cpu", "", "mmap")]
    if torch.cuda.is_available():
        rows += [("float16", "cuda", "", ""), ("float16", "cuda", "4bit", "")]
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "hub"
        file_bytes = build(cache, args.hidden, args.layers)
        env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
        print(
            f"random Llama: hidden {args.hidden}, {args.layers} layers, float32 file {file_bytes / MiB:.1f}MiB; "
            f"context {args.context}; torch {torch.__version__}; {os.cpu_count()} CPUs"
        )
        header = (
            f"{'device':6} {'dtype':14} {'est weights':>11} {'est kv':>8} {'est other':>9} {'est total':>9} "
            f"{'admitted':>9} {'load':>9} {'load/weights':>12} {'load peak':>9} {'load peak/admitted':>18} "
            f"{'turn peak':>9} {'peak/total':>10} {'freed':>9} {'left':>8}"
        )
        print(header)
        print("-" * len(header))
        for dtype, device, quant, mmap in rows:
            out = subprocess.run(
                [sys.executable, __file__, "--row", f"{dtype},{device},{quant},{mmap}", "--context", str(args.context)],
                capture_output=True, text=True, env=env, cwd=ROOT,
            )  # fmt: skip
            if out.returncode != 0:
                reason = (out.stderr.strip().splitlines() or ["failed"])[-1]
                print(f"{device:6} {dtype + ('+' + quant if quant else '') + (' mmap' if mmap else ''):14} {reason}")
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            m = lambda n: f"{n / MiB:.1f}M"  # noqa: E731
            print(
                f"{r['device']:6} {r['dtype']:14} {m(r['weights']):>11} {m(r['kv']):>8} {m(r['overhead']):>9} "
                f"{m(r['total']):>9} {m(r['admitted']):>9} {m(r['load']):>9} {r['load'] / r['weights']:>12.2f} "
                f"{m(r['load_peak']):>9} {r['load_peak'] / r['admitted']:>18.2f} {m(r['peak']):>9} "
                f"{r['peak'] / r['total']:>10.2f} {m(r['freed']):>9} {m(r['left']):>8}"
            )


if __name__ == "__main__":
    main()
