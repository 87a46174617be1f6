"""The model catalogue: known-good GGUF instruct models for tutoring (``data/catalog.toml``),
with the memory each needs at a context length and whether that fits the budget.

The data file holds facts only (repo, file, license, parameter count, architecture numbers
from the model's ``config.json``, and the file size as last seen). :func:`catalog_rows` asks
the Hub for each file's exact size when the Hub is reachable and marks the stored size as
approximate when it is not.
"""

from __future__ import annotations

import importlib.resources
import tomllib
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from mimir.models.llama_cpp import gguf_memory_estimate
from mimir.models.spec import MemoryEstimate
from mimir.units import format_bytes

#: Seconds the Hub may take, in all, to tell the catalogue's exact file sizes.
SIZE_LOOKUP_TIMEOUT_S = 8.0


@dataclass(frozen=True)
class CatalogEntry:
    id: str
    repo: str
    file: str
    license: str
    parameters: int
    quantization: str
    n_layer: int
    n_head_kv: int
    head_dim: int
    n_vocab: int
    approx_file_bytes: int

    def estimate(self, context_length: int, file_bytes: int | None = None) -> MemoryEstimate:
        return gguf_memory_estimate(
            file_bytes=self.approx_file_bytes if file_bytes is None else file_bytes,
            n_layer=self.n_layer, n_head_kv=self.n_head_kv, head_dim=self.head_dim, n_vocab=self.n_vocab,
            context_length=context_length,
        )

    @property
    def parameters_str(self) -> str:
        return f"{self.parameters / 1e9:.2f}B" if self.parameters >= 1e9 else f"{self.parameters / 1e6:.0f}M"


@dataclass(frozen=True)
class CatalogRow:
    entry: CatalogEntry
    file_bytes: int
    #: True when ``file_bytes`` came from the Hub now; False: the catalogue's stored size.
    size_exact: bool
    context_length: int
    estimate: MemoryEstimate
    budget_bytes: int

    @property
    def fits(self) -> bool:
        return self.estimate.total_bytes <= self.budget_bytes

    @property
    def size_str(self) -> str:
        return format_bytes(self.file_bytes) + ("" if self.size_exact else " (approx.)")

    def to_dict(self) -> dict[str, Any]:
        e = self.entry
        return {
            "id": e.id, "repo": e.repo, "file": e.file, "license": e.license, "parameters": e.parameters,
            "quantization": e.quantization, "file_bytes": self.file_bytes, "size_exact": self.size_exact,
            "context_length": self.context_length, "estimate_bytes": self.estimate.total_bytes,
            "kv_cache_bytes": self.estimate.kv_cache_bytes, "budget_bytes": self.budget_bytes, "fits": self.fits,
            "pull": f"mimir pull {e.repo} --file {e.file} --as {e.id}",
        }


_FIELDS = set(CatalogEntry.__dataclass_fields__)


def load_catalog(text: str | None = None) -> list[CatalogEntry]:
    """The entries of the shipped catalogue (or of ``text``, a catalogue in the same format)."""
    if text is None:
        text = importlib.resources.files("mimir").joinpath("data/catalog.toml").read_text(encoding="utf-8")
    data = tomllib.loads(text)
    entries = []
    for raw in data.get("model", []):
        missing = _FIELDS - set(raw)
        if missing:
            raise ValueError(f"catalogue entry {raw.get('id', '?')} lacks {', '.join(sorted(missing))}")
        entries.append(CatalogEntry(**{k: raw[k] for k in _FIELDS}))
    return entries


def find_entry(repo: str, file: str | None, entries: Sequence[CatalogEntry] | None = None) -> CatalogEntry | None:
    for entry in load_catalog() if entries is None else entries:
        if entry.repo.lower() == repo.lower() and (file is None or entry.file == file):
            return entry
    return None


def hub_file_sizes(entries: Sequence[CatalogEntry], *, timeout_s: float = SIZE_LOOKUP_TIMEOUT_S) -> dict[str, int]:
    """Exact file sizes from the Hub, by entry id; entries the Hub did not answer in time
    (offline, unreachable, missing) are left out."""
    from mimir.ops.hub import hub_offline, remote_file_sizes

    if hub_offline():
        return {}
    out: dict[str, int] = {}
    pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="mimir-catalog")
    futures = {pool.submit(remote_file_sizes, e.repo, [e.file]): e for e in entries}
    done, _ = wait(futures, timeout=timeout_s)
    pool.shutdown(wait=False, cancel_futures=True)
    for future in done:
        entry = futures[future]
        try:
            size = future.result().get(entry.file)
        except Exception:
            continue
        if size:
            out[entry.id] = size
    return out


def catalog_rows(
    *, context_length: int, budget_bytes: int, online: bool = True,
    sizes: Callable[[Sequence[CatalogEntry]], Mapping[str, int]] = hub_file_sizes,
) -> list[CatalogRow]:
    """Every catalogue entry with its file size, memory estimate and fit, smallest first."""
    entries = load_catalog()
    exact = dict(sizes(entries)) if online else {}
    rows = []
    for entry in entries:
        size = exact.get(entry.id)
        rows.append(CatalogRow(
            entry=entry, file_bytes=size or entry.approx_file_bytes, size_exact=size is not None,
            context_length=context_length, estimate=entry.estimate(context_length, size), budget_bytes=budget_bytes,
        ))
    return sorted(rows, key=lambda r: r.estimate.total_bytes)
