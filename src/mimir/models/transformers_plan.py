"""How a transformers model will load, and what that costs, decided before loading.

:func:`check_options` validates ``[models.ID.options]`` without touching files or CUDA;
:func:`plan_load` resolves ``auto`` values (device, dtype) into a :class:`LoadPlan`;
:func:`estimate_memory` is the arithmetic of the estimate (see ``transformers_backend``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from mimir.errors import ConfigError, MissingExtraError
from mimir.models.hf_source import CheckpointInfo, text_config
from mimir.models.spec import MemoryEstimate, ModelSpec

MiB = 1024 * 1024
#: Runtime overhead beyond weights, KV cache and activations (allocator slack, buffers).
FIXED_OVERHEAD_BYTES = {"ram": 32 * MiB, "gpu": 64 * MiB}
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
STORED_DTYPES = {"F32": "float32", "BF16": "bfloat16", "F16": "float16", "F64": "float32"}
QUANTIZATIONS = ("4bit", "8bit")
OPTIONS = ("device", "dtype", "quantization", "use_mmap", "download", "chat_template", "seed")
#: bitsandbytes leaves these in the compute dtype (embeddings are not Linear layers).
_UNQUANTIZED = ("embed", "lm_head", "wte", "wpe", "norm")


def import_runtime():
    """``(torch, transformers)``, or MissingExtraError naming the ``hf`` extra."""
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise MissingExtraError(exc.name or "transformers", "hf", "the transformers backend") from None
    return torch, transformers


@dataclass(frozen=True)
class LoadPlan:
    """How a spec will be loaded: decided from options, CUDA availability and the checkpoint."""

    device: str  # "cpu" or "cuda:N"
    dtype: str  # compute dtype: float32 | bfloat16 | float16
    quantization: str | None
    use_mmap: bool

    @property
    def memory(self) -> str:
        return "gpu" if self.device.startswith("cuda") else "ram"


def check_options(spec: ModelSpec) -> None:
    """Option names and values, without touching files or CUDA."""
    key = f"models.{spec.id}.options"
    opts = spec.options
    unknown = sorted(set(opts) - set(OPTIONS))
    if unknown:
        raise ConfigError(f"{key}.{unknown[0]}", f"unknown option for the transformers backend; valid: {', '.join(OPTIONS)}")
    device = str(opts.get("device", "auto"))
    if device not in {"auto", "cpu", "cuda"} and not (device.startswith("cuda:") and device[5:].isdigit()):
        raise ConfigError(f"{key}.device", f"'{device}' is not one of auto, cpu, cuda, cuda:N")
    dtype = str(opts.get("dtype", "auto"))
    if dtype != "auto" and dtype not in DTYPE_BYTES:
        raise ConfigError(f"{key}.dtype", f"'{dtype}' is not one of auto, {', '.join(DTYPE_BYTES)}")
    quant = opts.get("quantization")
    if quant is not None and quant not in QUANTIZATIONS:
        raise ConfigError(f"{key}.quantization", f"'{quant}' is not one of {', '.join(QUANTIZATIONS)}")
    if quant and device == "cpu":
        raise ConfigError(f"{key}.quantization", f"{quant} loading runs through bitsandbytes on CUDA; device is 'cpu'")
    if quant and dtype == "float32":
        raise ConfigError(f"{key}.dtype", f"{quant} loading computes in float16 or bfloat16, not float32")


def plan_load(spec: ModelSpec, checkpoint: CheckpointInfo, config: dict[str, Any]) -> LoadPlan:
    """Resolve ``auto`` values. Imports torch; checks CUDA and bitsandbytes where needed."""
    check_options(spec)
    torch, _ = import_runtime()
    opts = spec.options
    quant = opts.get("quantization")
    key = f"models.{spec.id}.options"
    if quant:
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise MissingExtraError("bitsandbytes", "quant", f"{quant} loading of model '{spec.id}'") from None
    device = str(opts.get("device", "auto"))
    cuda = torch.cuda.is_available()
    if device == "auto":
        device = "cuda:0" if cuda else "cpu"
    elif device.startswith("cuda"):
        if not cuda:
            raise ConfigError(f"{key}.device", f"'{device}' requested but CUDA is not available (torch {torch.__version__})")
        index = int(device[5:]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"{key}.device", f"'{device}' requested but only {torch.cuda.device_count()} CUDA device(s) exist")
        device = f"cuda:{index}"
    if quant and device == "cpu":
        raise ConfigError(f"{key}.quantization", f"{quant} loading needs CUDA, which is not available")
    dtype = str(opts.get("dtype", "auto"))
    if dtype == "auto":
        stored = STORED_DTYPES.get(checkpoint.stored_dtype or "") or str(
            text_config(config).get("dtype") or config.get("dtype") or config.get("torch_dtype") or "float32"
        )
        dtype = stored if stored in DTYPE_BYTES else "float32"
        if quant and dtype == "float32":
            dtype = "float16"
    return LoadPlan(device=device, dtype=dtype, quantization=quant, use_mmap=bool(opts.get("use_mmap", False)))


#: Safetensors dtypes ``from_pretrained`` can load as they are (no conversion).
_LOADABLE_AS_STORED = {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}


def load_dtype(plan: LoadPlan, checkpoint: CheckpointInfo) -> str:
    """The dtype ``from_pretrained`` loads in.

    On the CPU with copied weights (the default), the file's own dtype: the weights are then
    copied out of the file mapping and converted to the compute dtype one tensor at a time,
    each tensor's file pages dropped after it, so the file and the converted copy are never
    in memory whole at once. Elsewhere, the compute dtype (transformers converts).
    """
    stored = _LOADABLE_AS_STORED.get(checkpoint.stored_dtype or "")
    if plan.memory == "ram" and not plan.quantization and not plan.use_mmap and checkpoint.format == "safetensors" and stored:
        return stored
    return plan.dtype


def load_peak_bytes(weights_bytes: int, checkpoint: CheckpointInfo, plan: LoadPlan) -> int:
    """The highest host memory a CPU load reaches (0 on a GPU: the device estimate covers it).

    Tensor by tensor (see :func:`load_dtype`): the weights plus the largest tensor as stored
    (its file pages and its copy exist together for a moment). A load that converts in one
    go (``use_mmap = true``, ``.bin`` files) holds the whole file besides the weights.
    """
    if plan.memory != "ram":
        return 0
    fixed = FIXED_OVERHEAD_BYTES["ram"]
    stored = _LOADABLE_AS_STORED.get(checkpoint.stored_dtype or "")
    if stored and not plan.quantization and not plan.use_mmap and checkpoint.format == "safetensors":
        return weights_bytes + max(t.nbytes for t in checkpoint.tensors) + fixed
    stored_bytes = sum(t.nbytes for t in checkpoint.tensors) or checkpoint.parameter_count * 4
    return weights_bytes + (0 if stored == plan.dtype else stored_bytes) + fixed


def estimate_memory(config: dict[str, Any], checkpoint: CheckpointInfo, plan: LoadPlan, context_length: int) -> MemoryEstimate:
    """Pure arithmetic over the config, the tensor table and the plan."""
    dtype_bytes = DTYPE_BYTES[plan.dtype]
    if plan.quantization and checkpoint.tensors:
        weights = 0.0
        for t in checkpoint.tensors:
            quantized = len(t.shape) == 2 and t.name.endswith(".weight") and not any(s in t.name for s in _UNQUANTIZED)
            if not quantized:
                weights += t.numel * dtype_bytes
            elif plan.quantization == "4bit":
                weights += t.numel / 2 + math.ceil(t.numel / 64) * 4  # NF4 + one float32 absmax per 64
            else:
                weights += t.numel + t.shape[0] * 4  # int8 + one float32 scale per row
    else:
        per_param = {"4bit": 0.5625, "8bit": 1.0}.get(plan.quantization or "", dtype_bytes)
        weights = checkpoint.parameter_count * per_param
    c = text_config(config)
    hidden = int(c.get("hidden_size") or c.get("n_embd") or 0)
    heads = max(1, int(c.get("num_attention_heads") or c.get("n_head") or 1))
    kv_heads = int(c.get("num_key_value_heads") or heads)
    head_dim = int(c.get("head_dim") or hidden // heads)
    layers = int(c.get("num_hidden_layers") or c.get("n_layer") or 0)
    inter = int(c.get("intermediate_size") or c.get("n_inner") or 4 * hidden)
    kv_bytes = 2 * layers * context_length * kv_heads * head_dim * dtype_bytes
    # Prefill of a full-context prompt: a few hidden-size copies of the residual stream and
    # the MLP's gate/up/activation tensors per token. Fitted on bench_transformers_estimate
    # (peak grows linearly with context: about 4 x hidden + 6 x intermediate values a token).
    activations = context_length * (4 * hidden + 6 * inter) * dtype_bytes
    return MemoryEstimate(
        weights_bytes=int(weights),
        kv_cache_bytes=kv_bytes,
        overhead_bytes=activations + FIXED_OVERHEAD_BYTES[plan.memory],
        device=plan.memory,  # type: ignore[arg-type]
        load_peak_bytes=load_peak_bytes(int(weights), checkpoint, plan),
    )


def check_context(spec: ModelSpec, config: dict[str, Any]) -> None:
    limit = text_config(config).get("max_position_embeddings")
    if isinstance(limit, int) and spec.context_length > limit:
        raise ConfigError(
            f"models.{spec.id}.context_length",
            f"{spec.context_length} exceeds the model's max_position_embeddings ({limit})",
        )
