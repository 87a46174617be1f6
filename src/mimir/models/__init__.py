"""Model specs and backends (llama.cpp, transformers, scripted)."""

from mimir.models.base import Backend, ChatMessage, Completion, GenerationParams, LoadedModel
from mimir.models.spec import MemoryEstimate, ModelSource, ModelSpec

__all__ = [
    "Backend",
    "ChatMessage",
    "Completion",
    "GenerationParams",
    "LoadedModel",
    "MemoryEstimate",
    "ModelSource",
    "ModelSpec",
]
