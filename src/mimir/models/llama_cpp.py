"""Former home of the ``llama_cpp`` backend (llama-cpp-python); the backend now runs on
llama.cpp's server engine in :mod:`mimir.models.llama_server`. These names stay importable."""

from mimir.models.llama_server import (  # noqa: F401
    FIXED_OVERHEAD_BYTES,
    GGUF_MAGIC,
    LlamaServerBackend as LlamaCppBackend,
    LlamaServerModel as LlamaCppModel,
    gguf_memory_estimate,
    resolve_gguf_path,
)
