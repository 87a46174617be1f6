"""Where a transformers model's files are, and what its weights hold, without loading them.

A transformers model comes from one of:

- ``repo = "org/name"`` (+ ``revision``, default ``main``): resolved from the local Hugging
  Face cache (``HF_HUB_CACHE``, else ``HF_HOME/hub``, else ``~/.cache/huggingface/hub``, read
  at use time, by the cache inspector's rules) in its real layout ``models--org--name/{refs,snapshots,blobs}``. Nothing is
  downloaded unless the model's options say ``download = true`` and ``HF_HUB_OFFLINE`` is
  not set; then the snapshot is fetched with huggingface_hub's progress bars;
- ``path = "/dir"``: a directory as written by ``save_pretrained``.

The weights are described from the safetensors headers only (an 8-byte length, then a JSON
table of tensor names, dtypes, shapes and byte offsets). Reading a header also checks the
file: a header that is not JSON, offsets outside the file, or a file cut short raise a
:class:`~mimir.errors.ModelLoadError` naming the file, before any load is attempted.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mimir.core.hub_cache import repo_folder, resolve_cache_dir
from mimir.errors import ConfigError, MissingExtraError, ModelLoadError
from mimir.models.spec import ModelSpec

#: Bytes per element of the safetensors dtypes.
SAFETENSORS_DTYPE_BYTES = {
    "F64": 8, "I64": 8, "U64": 8,
    "F32": 4, "I32": 4, "U32": 4,
    "F16": 2, "BF16": 2, "I16": 2, "U16": 2,
    "F8_E4M3": 1, "F8_E5M2": 1, "I8": 1, "U8": 1, "BOOL": 1,
}  # fmt: skip
#: A header larger than this is not a real safetensors header.
MAX_HEADER_BYTES = 100 * 1024 * 1024
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
_TRUE = {"1", "true", "yes", "on"}
#: Files a download fetches: config, tokenizer, chat template and safetensors weights.
DOWNLOAD_PATTERNS = ("*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken")


@dataclass(frozen=True)
class ModelDir:
    """A resolved model directory (a cache snapshot or a local folder)."""

    path: Path
    #: For messages: ``hf:org/name@main (commit 0123abc)`` or the folder.
    description: str
    repo_id: str | None = None
    revision: str | None = None
    commit: str | None = None


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * SAFETENSORS_DTYPE_BYTES.get(self.dtype, 4)


@dataclass(frozen=True)
class CheckpointInfo:
    """What the weight files hold, from their headers (or from config.json for .bin files)."""

    format: str  # "safetensors" | "bin"
    files: tuple[Path, ...]
    tensors: tuple[TensorInfo, ...]
    #: Parameters when there are no headers to count (``.bin`` checkpoints).
    config_parameter_count: int | None = None

    @property
    def parameter_count(self) -> int:
        if self.tensors:
            return sum(t.numel for t in self.tensors)
        return self.config_parameter_count or 0

    @property
    def stored_dtype(self) -> str | None:
        """The floating dtype most of the parameters are stored in (``"BF16"``...)."""
        counts: dict[str, int] = {}
        for t in self.tensors:
            if t.dtype in {"F32", "F16", "BF16", "F64"}:
                counts[t.dtype] = counts.get(t.dtype, 0) + t.numel
        return max(counts, key=counts.__getitem__) if counts else None


def hub_offline(env: dict[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    return str(env.get("HF_HUB_OFFLINE", "")).strip().lower() in _TRUE


def hf_cache_dir(env: dict[str, str] | None = None) -> Path:
    """The hub cache folder, by the same rules as the cache inspector, read now."""
    return resolve_cache_dir(env=env)


def download_allowed(spec: ModelSpec) -> bool:
    return bool(spec.options.get("download", False)) and not hub_offline()


def check_source(spec: ModelSpec) -> None:
    """Reject sources the transformers backend cannot use (cheap; touches no files)."""
    source = spec.source
    if source.kind not in {"hf", "path"}:
        raise ConfigError(
            f"models.{spec.id}",
            f"the transformers backend loads a Hugging Face repo (repo = 'org/name') or a model "
            f"directory (path = '/dir'), not a {source.kind} source",
        )
    if source.kind == "hf":
        if source.filename:
            raise ConfigError(
                f"models.{spec.id}.file",
                "the transformers backend loads the whole repo; 'file' is for GGUF repos (backend = 'llama_cpp')",
            )
        if source.value.count("/") != 1 or not all(source.value.split("/")):
            raise ConfigError(f"models.{spec.id}.repo", f"'{source.value}' is not a repo id such as 'org/name'")


def resolve_model_dir(spec: ModelSpec, *, may_download: bool = True) -> ModelDir:
    """The local folder holding the model's config, tokenizer and weights.

    Raises :class:`ModelLoadError` naming what is missing: the repo, the revision, the
    snapshot or ``config.json``. With ``may_download`` and a spec that allows it
    (:func:`download_allowed`), a repo or revision missing from the cache is downloaded.
    """
    check_source(spec)
    source = spec.source
    if source.kind == "path":
        path = Path(source.value).expanduser()
        if not path.exists():
            raise ModelLoadError(spec.id, str(path), "directory not found")
        if not path.is_dir():
            raise ModelLoadError(spec.id, str(path), "expected a model directory (config.json, tokenizer, weights), got a file")
        _require_config(spec, path, str(path))
        return ModelDir(path=path, description=str(path))

    repo_id = source.value
    revision = source.revision or "main"
    try:
        return _cached_snapshot(spec, repo_id, revision)
    except ModelLoadError:
        if not (may_download and download_allowed(spec)):
            raise
    download_snapshot(spec, repo_id, revision)
    return _cached_snapshot(spec, repo_id, revision)


def _cached_snapshot(spec: ModelSpec, repo_id: str, revision: str) -> ModelDir:
    cache = hf_cache_dir()
    described = f"hf:{repo_id}@{revision}"
    folder = repo_folder(cache, repo_id)
    how_to_get = (
        f"download it with `hf download {repo_id} --revision {revision}` "
        f"or set download = true in [models.{spec.id}.options]"
    )
    if not folder.is_dir():
        raise ModelLoadError(
            spec.id, described, f"repo '{repo_id}' is not in the local Hugging Face cache at {cache}; {how_to_get}"
        )
    if _COMMIT_RE.match(revision):
        commit = revision
    else:
        ref = folder / "refs" / revision
        if not ref.is_file():
            raise ModelLoadError(
                spec.id,
                described,
                f"revision '{revision}' of '{repo_id}' is not in the local cache "
                f"(cached: {_cached_revisions(folder)}); {how_to_get}",
            )
        commit = ref.read_text(encoding="utf-8").strip()
    snapshot = folder / "snapshots" / commit
    if not snapshot.is_dir():
        raise ModelLoadError(
            spec.id,
            described,
            f"revision '{revision}' (commit {commit}) of '{repo_id}' has no snapshot folder in the local cache "
            f"(cached: {_cached_revisions(folder)}); {how_to_get}",
        )
    description = f"{described} (commit {commit[:7]})"
    _require_config(spec, snapshot, description)
    return ModelDir(path=snapshot, description=description, repo_id=repo_id, revision=revision, commit=commit)


def _cached_revisions(folder: Path) -> str:
    names: list[str] = []
    refs = folder / "refs"
    if refs.is_dir():
        for ref in sorted(p for p in refs.rglob("*") if p.is_file()):
            commit = ref.read_text(encoding="utf-8", errors="replace").strip()
            names.append(f"{ref.relative_to(refs).as_posix()} -> {commit[:7]}")
    snapshots = folder / "snapshots"
    if snapshots.is_dir():
        named = {n.rsplit(" ", 1)[-1] for n in names}
        names += [p.name[:7] for p in sorted(snapshots.iterdir()) if p.is_dir() and p.name[:7] not in named]
    return ", ".join(names) or "nothing"


def _require_config(spec: ModelSpec, folder: Path, description: str) -> None:
    config = folder / "config.json"
    if not config.exists():
        if config.is_symlink():
            raise ModelLoadError(spec.id, description, f"{config} is a broken link (its blob is missing)")
        raise ModelLoadError(spec.id, description, f"no config.json in {folder}: not a transformers model folder")


def download_snapshot(spec: ModelSpec, repo_id: str, revision: str) -> Path:
    """Fetch config, tokenizer and safetensors weights into the cache, with progress bars."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise MissingExtraError("huggingface_hub", "hf", "downloading Hugging Face models") from None
    try:
        return Path(
            snapshot_download(
                repo_id, revision=revision, cache_dir=hf_cache_dir(), allow_patterns=list(DOWNLOAD_PATTERNS)
            )
        )
    except Exception as exc:
        raise ModelLoadError(spec.id, f"hf:{repo_id}@{revision}", f"download failed: {type(exc).__name__}: {exc}") from None


def read_config(spec: ModelSpec, model_dir: ModelDir) -> dict[str, Any]:
    path = model_dir.path / "config.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(spec.id, str(path), f"cannot read config.json: {exc}") from None
    if not isinstance(data, dict):
        raise ModelLoadError(spec.id, str(path), "config.json is not a JSON object")
    return data


def read_safetensors_header(spec_id: str, path: Path) -> list[TensorInfo]:
    """Tensor table of one safetensors file, checked against the file's size. Reads the header only."""
    if not path.exists():
        why = "a broken link (its blob is missing: incomplete download?)" if path.is_symlink() else "missing"
        raise ModelLoadError(spec_id, str(path), f"weights file is {why}")
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            raw_len = fh.read(8)
            if len(raw_len) < 8:
                raise ModelLoadError(spec_id, str(path), f"corrupt safetensors file: only {size} bytes long")
            (header_len,) = struct.unpack("<Q", raw_len)
            if header_len > min(MAX_HEADER_BYTES, size - 8):
                raise ModelLoadError(
                    spec_id, str(path), f"corrupt safetensors file: header length {header_len} does not fit a {size}-byte file"
                )
            raw = fh.read(header_len)
    except OSError as exc:
        raise ModelLoadError(spec_id, str(path), f"cannot read: {exc}") from None
    try:
        header = json.loads(raw.decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
    except (UnicodeDecodeError, ValueError) as exc:
        raise ModelLoadError(spec_id, str(path), f"corrupt safetensors file: header is not valid JSON ({exc})") from None
    data_bytes = size - 8 - header_len
    tensors: list[TensorInfo] = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = entry["dtype"]
            shape = tuple(int(d) for d in entry["shape"])
            begin, end = (int(x) for x in entry["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise ModelLoadError(spec_id, str(path), f"corrupt safetensors file: bad entry for tensor '{name}'") from None
        info = TensorInfo(name, dtype, shape)
        if dtype not in SAFETENSORS_DTYPE_BYTES:
            raise ModelLoadError(spec_id, str(path), f"corrupt safetensors file: tensor '{name}' has unknown dtype {dtype}")
        if end - begin != info.nbytes or begin < 0:
            raise ModelLoadError(
                spec_id, str(path), f"corrupt safetensors file: tensor '{name}' offsets {begin}..{end} do not match its shape"
            )
        if end > data_bytes:
            raise ModelLoadError(
                spec_id,
                str(path),
                f"corrupt safetensors file: tensor '{name}' ends at byte {end} but the file holds {data_bytes} "
                "data bytes (truncated download?)",
            )
        tensors.append(info)
    return tensors


def inspect_checkpoint(spec: ModelSpec, model_dir: ModelDir, config: dict[str, Any]) -> CheckpointInfo:
    """Describe the weights from headers (safetensors) or the config (``.bin``), checking every file."""
    folder = model_dir.path
    index = folder / "model.safetensors.index.json"
    files: list[Path]
    if index.exists() or index.is_symlink():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            files = [folder / name for name in sorted(set(weight_map.values()))]
        except (OSError, KeyError, TypeError, ValueError) as exc:
            raise ModelLoadError(spec.id, str(index), f"cannot read the safetensors index: {exc}") from None
    elif (folder / "model.safetensors").exists() or (folder / "model.safetensors").is_symlink():
        files = [folder / "model.safetensors"]
    else:
        bins = sorted(folder.glob("pytorch_model*.bin"))
        if bins:
            return CheckpointInfo("bin", tuple(bins), (), config_parameter_count=parameter_count_from_config(config))
        raise ModelLoadError(
            spec.id, model_dir.description, f"no weights in {folder} (expected model.safetensors or a sharded index)"
        )
    tensors: list[TensorInfo] = []
    for path in files:
        tensors.extend(read_safetensors_header(spec.id, path))
    return CheckpointInfo("safetensors", tuple(files), tuple(tensors))


def remote_checkpoint(spec: ModelSpec, repo_id: str, revision: str) -> tuple[dict[str, Any], CheckpointInfo]:
    """Config and tensor table of a repo that is not cached yet: small files and headers only.

    Used to estimate a model that ``download = true`` will fetch at load time.
    """
    try:
        from huggingface_hub import HfApi, hf_hub_download
    except ImportError:
        raise MissingExtraError("huggingface_hub", "hf", "downloading Hugging Face models") from None
    described = f"hf:{repo_id}@{revision}"
    try:
        config_path = hf_hub_download(repo_id, "config.json", revision=revision, cache_dir=hf_cache_dir())
        config = json.loads(Path(config_path).read_text(encoding="utf-8"))
        meta = HfApi().get_safetensors_metadata(repo_id, revision=revision)
    except Exception as exc:
        raise ModelLoadError(spec.id, described, f"cannot read the repo's config and weight headers: {type(exc).__name__}: {exc}") from None
    tensors = tuple(
        TensorInfo(name, info.dtype, tuple(info.shape))
        for file_meta in meta.files_metadata.values()
        for name, info in file_meta.tensors.items()
    )
    return config, CheckpointInfo("safetensors", (), tensors)


def text_config(config: dict[str, Any]) -> dict[str, Any]:
    """The language-model part of a config (multimodal configs nest it as ``text_config``)."""
    nested = config.get("text_config")
    return nested if isinstance(nested, dict) else config


def parameter_count_from_config(config: dict[str, Any]) -> int:
    """Approximate parameters of a decoder-only transformer from its config (no headers)."""
    c = text_config(config)
    hidden = int(c.get("hidden_size") or c.get("n_embd") or c.get("d_model") or 0)
    layers = int(c.get("num_hidden_layers") or c.get("n_layer") or 0)
    vocab = int(c.get("vocab_size") or 0)
    heads = int(c.get("num_attention_heads") or c.get("n_head") or 1)
    kv_heads = int(c.get("num_key_value_heads") or heads)
    head_dim = int(c.get("head_dim") or (hidden // max(1, heads)))
    inter = int(c.get("intermediate_size") or c.get("n_inner") or 4 * hidden)
    attn = hidden * heads * head_dim * 2 + hidden * kv_heads * head_dim * 2
    mlp = 3 * hidden * inter
    per_layer = attn + mlp + 2 * hidden
    embeddings = vocab * hidden * (1 if c.get("tie_word_embeddings", config.get("tie_word_embeddings", True)) else 2)
    return embeddings + layers * per_layer + hidden
