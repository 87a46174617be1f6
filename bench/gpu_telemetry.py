"""Per-step CUDA and NVML figures on a GPU machine: a prepared check, about a minute.

Run on a machine with CUDA: ``.venv/bin/python bench/gpu_telemetry.py``
(``--device cpu`` runs the same steps on the CPU, to check the script where there is no GPU;
the CUDA fields are then null.)

What it does, with no network: builds a random Llama (``--hidden``/``--layers``; the default is
about 110M parameters, ~440 MB in float32) with a trained tokenizer in a temporary folder,
loads it through the model manager with the ``transformers`` backend on CUDA, and runs steps
under telemetry:

1. ``load``: the first ``manager.use`` (its load event carries estimate and measured bytes);
2. ``routing`` x3: ``score_choices`` (YES/NO), as the routing agents do;
3. ``response``: a 32-token answer;
4. ``spike``: allocates 256 MiB of CUDA memory and frees it inside the step: the step's CUDA
   peak must show it although allocated-after does not;
5. ``unload``: the manager unloads the model (its unload event and the memory it returned).

Prints one table (per step: wall time, CUDA allocated before/after, CUDA peak, reserved, NVML
used before/after, events) and the checks that must hold; exits 1 if one fails.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MiB = 1024 * 1024


def mib(n: int | None) -> str:
    return "-" if n is None else f"{n / MiB:.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description="per-step CUDA/NVML telemetry on a GPU")
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=8)
    args = parser.parse_args()

    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device here: nothing to measure (use --device cpu to check the script)")
        return 2

    sys.path.insert(0, str(REPO / "tests"))
    from tiny_hf import TinyShape, build_tiny_llama

    from mimir.models.base import ChatMessage, GenerationParams
    from mimir.models.spec import ModelSource, ModelSpec
    from mimir.runtime.manager import ModelManager
    from mimir.telemetry import Telemetry
    from mimir.core.gpu import gpu_memory

    if args.device.startswith("cuda"):
        torch.cuda.init()  # so the CUDA probe reads from the first step on

    with tempfile.TemporaryDirectory() as tmp:
        shape = TinyShape(
            hidden_size=args.hidden,
            intermediate_size=args.hidden * 11 // 4,
            num_hidden_layers=args.layers,
            num_attention_heads=max(1, args.hidden // 64),
            num_key_value_heads=max(1, args.hidden // 128),
        )
        folder = build_tiny_llama(Path(tmp) / "llama", shape)
        spec = ModelSpec(
            "gpu-llama",
            "transformers",
            ModelSource("path", str(folder)),
            context_length=512,
            options={"device": args.device, "dtype": "float32", "seed": 0},
        )
        manager = ModelManager({spec.id: spec}, budget_ram_bytes=16 * 1024**3, budget_gpu_bytes=None)
        tel = Telemetry(sample_interval_s=0.01)
        tel.attach(manager)
        question = [ChatMessage("user", "Practice questions help students learn. YES or NO?")]
        with tel.turn(session_id="gpu-check", turn_id="gpu-turn") as turn:
            with tel.step("load", agent="manager", model=spec.id):
                with manager.use(spec.id):
                    pass
            for i in range(3):
                with tel.step("routing", agent=f"agent_{i + 1}", model=spec.id) as step:
                    with manager.use(spec.id) as model:
                        model.score_choices(question, ["YES", "NO"])
            with tel.step("response", agent="response", model=spec.id) as step:
                with manager.use(spec.id) as model:
                    c = model.chat(question, GenerationParams(max_tokens=32, temperature=0.0, seed=0))
                step.add_tokens(tokens_in=c.tokens_in, tokens_out=c.tokens_out)
            with tel.step("spike", agent="check"):
                block = torch.empty(256 * MiB, dtype=torch.uint8, device=args.device)
                block.fill_(1)
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                del block
            with tel.step("unload", agent="manager", model=spec.id):
                manager.unload(spec.id, reason="gpu check done")
        tel.close()
        manager.close()

    steps = turn.record.steps
    print(f"\ndevice: {torch.cuda.get_device_name(0) if args.device.startswith('cuda') else 'cpu'}; "
          f"NVML devices: {[(d.index, mib(d.used_bytes), mib(d.total_bytes)) for d in gpu_memory()] or 'none'}")
    print("\n## Per-step telemetry (MiB)\n")
    header = f"{'step':<10} {'agent':<9} {'wall s':>7} {'cuda before':>11} {'cuda after':>10} {'cuda peak':>9} {'reserved':>9} {'nvml before':>11} {'nvml after':>10} {'rss peak':>9}  events"
    print(header)
    print("-" * len(header))
    for s in steps:
        print(
            f"{s.name:<10} {s.agent or '-':<9} {s.wall_s:>7.3f} {mib(s.cuda_allocated_before_bytes):>11} "
            f"{mib(s.cuda_allocated_after_bytes):>10} {mib(s.cuda_peak_allocated_bytes):>9} "
            f"{mib(s.cuda_reserved_after_bytes):>9} {mib(s.gpu_used_before_bytes):>11} "
            f"{mib(s.gpu_used_after_bytes):>10} {mib(s.rss_peak_bytes):>9}  {s.events_str}"
        )
    print(f"\nturn: {turn.record.wall_s:.2f}s, peak RSS {mib(turn.record.peak_rss_bytes)} MiB, "
          f"CUDA peak {mib(turn.record.cuda_peak_allocated_bytes)} MiB")

    if not args.device.startswith("cuda"):
        return 0
    by_name = {s.name: s for s in steps}
    load, spike, unload = by_name["load"], by_name["spike"], by_name["unload"]
    (load_event,) = [e for e in load.events if e.kind == "load"]
    checks = {
        "CUDA fields present on every step": all(s.cuda_allocated_after_bytes is not None for s in steps),
        "NVML fields present on every step": all(s.gpu_used_after_bytes is not None for s in steps),
        "load step: CUDA allocated grew by the measured load": (
            load.cuda_allocated_after_bytes - load.cuda_allocated_before_bytes >= 0.9 * (load_event.measured_bytes or 0) > 0
        ),
        "load event is on the GPU": load_event.device == "gpu",
        "spike: peak shows 256 MiB freed inside the step": (
            spike.cuda_peak_allocated_bytes - spike.cuda_allocated_before_bytes >= 256 * MiB
            and spike.cuda_allocated_after_bytes - spike.cuda_allocated_before_bytes < 16 * MiB
        ),
        "unload step: CUDA allocated fell": unload.cuda_allocated_after_bytes < unload.cuda_allocated_before_bytes,
    }
    print()
    for name, ok in checks.items():
        print(f"[{'ok' if ok else 'FAIL'}] {name}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
