"""GPU check for the transformers backend: float16 and 4-bit on CUDA, one tutor turn each.

For every variant it writes a ``mimir.toml`` whose roles all use one transformers model
(decisions made by the model, so routing scores choices on it too), runs one real tutor turn
through ``MimirApp`` (manager, telemetry, storage), and prints per step: wall time, CUDA
allocated after the step, CUDA peak allocated during it, and NVML used memory; then the
model's estimate against what the manager measured at load.

    .venv/bin/python bench/gpu_transformers_check.py                 # random ~300M Llama
    .venv/bin/python bench/gpu_transformers_check.py --repo org/name # a model in the HF cache
    .venv/bin/python bench/gpu_transformers_check.py --allow-cpu     # dry run without CUDA

Without ``--repo`` the model is a randomly initialised Llama built here (no hub access), so
its words are noise; the memory numbers are what this check is for. 4-bit needs the
``quant`` extra (bitsandbytes); a variant that cannot run prints its error and the rest go
on, and the script then exits with status 1 (2 when there is no CUDA and no --allow-cpu).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
MiB = 1024 * 1024
QUESTION = "Can you make some practice questions about summation? What does the sigma symbol mean?"


def mib(n: int | None) -> str:
    return "-" if n is None else f"{n / MiB:.1f}"


def write_config(home: Path, repo: str, options: dict, context_length: int) -> Path:
    opts = ", ".join(f'{k} = "{v}"' for k, v in options.items())
    path = home / "mimir.toml"
    path.write_text(
        f"""home = "{home}"

[budget]
memory = "16GiB"

[models.hf]
backend = "transformers"
repo = "{repo}"
context_length = {context_length}
options = {{ {opts} }}

[tutor]
deciders = {{ tool = "model", routing = "model" }}
thinking_max_tokens = 32
response_max_tokens = 48
""",
        encoding="utf-8",
    )
    return path


def run_variant(label: str, repo: str, options: dict, context_length: int) -> bool:
    """Run one variant; False when it failed (its error is printed)."""
    from mimir.app import MimirApp
    from mimir.errors import MimirError
    from mimir.core.gpu import gpu_memory

    print(f"\n== {label}: {options}")
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        config = write_config(home, repo, options, context_length)
        os.environ["MIMIR_HOME"] = str(home)
        t0 = time.perf_counter()
        try:
            with MimirApp.from_config(config) as app:
                estimate = app.manager.estimate("hf")
                result = app.tutor.run_turn(QUESTION)
                status = app.manager.status().get("hf")
                header = f"{'step':28} {'model':6} {'wall_s':>7} {'cuda alloc MiB':>15} {'cuda peak MiB':>14} {'nvml used MiB':>14} {'rss MiB':>8}"
                print(header)
                print("-" * len(header))
                for step in result.telemetry.steps:
                    print(
                        f"{step.name[:28]:28} {str(step.model or '-')[:6]:6} {step.wall_s:>7.2f} "
                        f"{mib(getattr(step, 'cuda_allocated_after_bytes', None)):>15} "
                        f"{mib(getattr(step, 'cuda_peak_allocated_bytes', None)):>14} "
                        f"{mib(getattr(step, 'gpu_used_after_bytes', None)):>14} "
                        f"{mib(getattr(step, 'rss_after_bytes', None)):>8}"
                    )
                print(
                    f"estimate {mib(estimate.total_bytes)} MiB on {estimate.device} (weights {mib(estimate.weights_bytes)}, "
                    f"kv {mib(estimate.kv_cache_bytes)}, other {mib(estimate.overhead_bytes)}); measured at load "
                    f"{mib(status.measured_bytes if status else None)} MiB; turn {time.perf_counter() - t0:.1f}s; "
                    f"flags {', '.join(str(f) for f in result.flags) or '-'}; tokens out {result.tokens_out}"
                )
                print(f"response: {result.response[:120]!r}")
            devices = gpu_memory()
            print("after close: NVML used " + (", ".join(f"gpu{d.index} {mib(d.used_bytes)} MiB" for d in devices) or "- (no NVML)"))
        except MimirError as exc:
            print(f"{label}: FAILED: {type(exc).__name__}: {exc}")
            return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repo", help="a causal LM already in the local Hugging Face cache")
    parser.add_argument("--context", type=int, default=1024)
    parser.add_argument("--allow-cpu", action="store_true", help="dry run on the CPU (float32 only) when there is no CUDA")
    args = parser.parse_args()

    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not args.allow_cpu:
        print("no CUDA device: nothing checked (use --allow-cpu for a dry run)")
        sys.exit(2)
    print(f"torch {torch.__version__}; " + (f"CUDA {torch.cuda.get_device_name(0)}" if cuda else "CPU dry run"))
    with tempfile.TemporaryDirectory() as tmp:
        repo = args.repo
        if repo is None:
            from tiny_hf import TINY_REPO, TinyShape, build_tiny_llama, install_in_cache, model_files

            shape = (
                TinyShape(hidden_size=1536, intermediate_size=4096, num_hidden_layers=12, num_attention_heads=12, num_key_value_heads=4)
                if cuda
                else TinyShape()
            )
            cache = Path(tmp) / "hub"
            files = model_files(build_tiny_llama(Path(tmp) / "model", shape, dtype="float16" if cuda else "float32"))
            install_in_cache(cache, files)
            os.environ["HF_HUB_CACHE"] = str(cache)
            repo = TINY_REPO
            print(f"random Llama {shape}")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        variants = (
            [("float16", {"device": "cuda", "dtype": "float16"}), ("4-bit", {"device": "cuda", "dtype": "float16", "quantization": "4bit"})]
            if cuda
            else [("float32 (CPU dry run)", {"device": "cpu", "dtype": "float32"})]
        )
        failed = [label for label, options in variants if not run_variant(label, repo, options, args.context)]
    if failed:
        # A GPU run must not pass silently: any variant that could not run fails the check.
        print(f"\nFAILED: {', '.join(failed)} ({len(failed)} of {len(variants)} variants)")
        sys.exit(1)
    print(f"\nall {len(variants)} variants ran")


if __name__ == "__main__":
    main()
