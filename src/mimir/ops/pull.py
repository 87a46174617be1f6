"""``mimir pull``: plan, download, check, estimate and configure a model from the Hub.

The shape is plan, then execute (as for cache pruning)::

    plan = plan_pull("Qwen/Qwen2.5-1.5B-Instruct-GGUF", context_length=2048)   # one API call
    plan.files, plan.download_bytes, plan.estimate_before     # what --dry-run shows
    result = execute_pull(plan, budget)                      # download, verify, estimate
    write_model_config(config_path, plan)                    # [models.ID] and [roles], comments kept

Downloads go into the Hugging Face cache through ``huggingface_hub`` (its progress bars, and
its resume of ``.incomplete`` files after an interrupted transfer); each LFS file is then
checked against the sha256 the Hub lists, and removed from the cache when it does not match.
A GGUF repo gives one file (``--file``, or the single Q4_K_M one); a transformers repo gives
its config, tokenizer and safetensors weights.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from fnmatch import fnmatch
from pathlib import Path
from typing import Literal

from mimir.config import BUNDLED_PACKAGE_RESOURCE, DEFAULT_MODEL_ID, ROLES, Budget, settings_from_dict
from mimir.errors import HubError, InvalidInputError, MimirError, MissingExtraError
from mimir.models.spec import MemoryEstimate, ModelSource, ModelSpec
from mimir.ops.catalog import CatalogEntry, find_entry
from mimir.ops.hub import RemoteFile, RemoteRepo, endpoint, hub, remote_repo
from mimir.units import format_bytes

#: Files of a transformers repo that loading needs (weights in safetensors only).
TRANSFORMERS_PATTERNS = ("config.json", "generation_config.json", "*.safetensors", "model.safetensors.index.json",
                         "tokenizer*", "special_tokens_map.json", "*.model", "chat_template*", "vocab.*", "merges.txt")
_ID_CHARS = re.compile(r"[^a-z0-9._-]+")
#: Preferred GGUF quantization when a repo has several files and none was named.
PREFERRED_QUANT = "q4_k_m"


@dataclass(frozen=True)
class PullPlan:
    repo: RemoteRepo
    kind: Literal["gguf", "transformers"]
    files: tuple[RemoteFile, ...]
    model_id: str
    roles: tuple[str, ...]
    context_length: int
    #: Bytes of ``files`` already complete in the local cache (nothing to download for them).
    cached_bytes: int = 0
    #: The catalogue's entry for this file, when it has one (its numbers make the estimate).
    catalog: CatalogEntry | None = None

    @property
    def backend(self) -> str:
        return "llama_cpp" if self.kind == "gguf" else "transformers"

    @property
    def total_bytes(self) -> int:
        return sum(f.size_bytes for f in self.files)

    @property
    def download_bytes(self) -> int:
        return self.total_bytes - self.cached_bytes

    @property
    def gguf_file(self) -> str | None:
        return self.files[0].path if self.kind == "gguf" else None

    @property
    def spec(self) -> ModelSpec:
        return ModelSpec(
            id=self.model_id, backend=self.backend,
            source=ModelSource("hf", self.repo.repo_id, revision=self.repo.revision, filename=self.gguf_file),
            context_length=self.context_length,
        )

    @property
    def estimate_before(self) -> MemoryEstimate | None:
        """The estimate before downloading: from the catalogue's architecture numbers, when
        the file is in the catalogue. Other files are estimated from their metadata after."""
        if self.catalog is None:
            return None
        return self.catalog.estimate(self.context_length, self.files[0].size_bytes)


@dataclass
class PullProgress:
    """Bytes on disk so far, updated while :func:`execute_pull` runs (readable from any thread)."""

    total_bytes: int
    done_bytes: int = 0
    current_file: str | None = None
    finished: bool = False

    @property
    def fraction(self) -> float:
        return 1.0 if self.total_bytes <= 0 else min(1.0, self.done_bytes / self.total_bytes)


@dataclass(frozen=True)
class PullResult:
    plan: PullPlan
    #: The local folder (snapshot) or file the model loads from.
    local_path: Path
    estimate: MemoryEstimate
    budget_bytes: int
    device: str
    downloaded: tuple[str, ...] = field(default_factory=tuple)

    @property
    def fits(self) -> bool:
        return self.estimate.total_bytes <= self.budget_bytes


def default_model_id(repo_id: str) -> str:
    name = repo_id.rsplit("/", 1)[-1].lower()
    name = re.sub(r"[-_.]gguf$", "", name)
    return _ID_CHARS.sub("-", name).strip("-") or "model"


def _pick_gguf(repo: RemoteRepo, filename: str | None) -> RemoteFile:
    ggufs = [f for f in repo.files if f.path.lower().endswith(".gguf")]
    if filename is not None:
        found = repo.get(filename)
        if found is None:
            names = ", ".join(f.path for f in ggufs[:12]) or "(no GGUF files)"
            raise HubError(f"'{filename}' is not in {repo.repo_id}@{repo.revision}; GGUF files there: {names}")
        return found
    if len(ggufs) == 1:
        return ggufs[0]
    preferred = [f for f in ggufs if PREFERRED_QUANT in f.path.lower() and "-of-" not in f.path]
    if len(preferred) == 1:
        return preferred[0]
    names = ", ".join(f.path for f in ggufs[:12])
    raise InvalidInputError(f"{repo.repo_id} has {len(ggufs)} GGUF files; choose one with --file: {names}")


def plan_pull(
    repo_id: str, *, filename: str | None = None, revision: str = "main", model_id: str | None = None,
    roles: Sequence[str] = (), context_length: int = 2048,
) -> PullPlan:
    """What a pull would download, and the estimate when it is known before downloading."""
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo_id or ""):
        raise InvalidInputError(f"'{repo_id}' is not a repo id such as 'Qwen/Qwen2.5-1.5B-Instruct-GGUF'")
    bad = [r for r in roles if r not in ROLES]
    if bad:
        raise InvalidInputError(f"unknown role '{bad[0]}'; roles: {', '.join(ROLES)}")
    if model_id is not None and not re.fullmatch(r"[A-Za-z0-9._-]+", model_id):
        raise InvalidInputError(f"model id '{model_id}' may use letters, digits, '.', '_' and '-' only")
    repo = remote_repo(repo_id, revision)
    is_gguf = filename is not None or any(f.path.lower().endswith(".gguf") for f in repo.files)
    if is_gguf:
        files: tuple[RemoteFile, ...] = (_pick_gguf(repo, filename),)
        kind: Literal["gguf", "transformers"] = "gguf"
    else:
        if repo.get("config.json") is None:
            raise HubError(f"{repo_id} has neither GGUF files nor a transformers config.json")
        files = tuple(f for f in repo.files if any(fnmatch(f.path, p) for p in TRANSFORMERS_PATTERNS))
        if not any(f.path.endswith(".safetensors") for f in files):
            raise HubError(f"{repo_id} has no safetensors weights (only those are downloaded)")
        kind = "transformers"
    catalog = find_entry(repo_id, files[0].path) if kind == "gguf" else None
    plan = PullPlan(
        repo=repo, kind=kind, files=files,
        model_id=model_id or (catalog.id if catalog else default_model_id(repo_id)),
        roles=tuple(dict.fromkeys(roles)), context_length=context_length, catalog=catalog,
    )
    return replace(plan, cached_bytes=sum(f.size_bytes for f in files if _cached_blob(plan, f) is not None))


def _cache_dir() -> Path:
    from mimir.models.hf_source import hf_cache_dir

    return hf_cache_dir()


def _repo_folder(repo_id: str) -> Path:
    return _cache_dir() / ("models--" + repo_id.replace("/", "--"))


def _etag(f: RemoteFile) -> str | None:
    return f.sha256  # LFS blobs are stored under their sha256


def _cached_blob(plan: PullPlan, f: RemoteFile) -> Path | None:
    etag = _etag(f)
    if etag is None:
        snap = _repo_folder(plan.repo.repo_id) / "snapshots" / plan.repo.commit / f.path
        return snap if snap.is_file() else None
    blob = _repo_folder(plan.repo.repo_id) / "blobs" / etag
    return blob if blob.is_file() and blob.stat().st_size == f.size_bytes else None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _remove_download(local: Path) -> None:
    """Remove a downloaded file from the cache: the snapshot link and the blob it points to."""
    target = local.resolve()
    cache = _cache_dir().resolve()
    for p in (local, target):
        if cache in p.parents or p.parent.resolve() == cache:
            try:
                p.unlink()
            except FileNotFoundError:
                pass


def _watch(plan: PullPlan, progress: PullProgress, before: int, stop: threading.Event, interval_s: float = 0.2) -> None:
    """Update ``progress`` from the size of the file being written (``blobs/*.incomplete``)."""
    blobs = _repo_folder(plan.repo.repo_id) / "blobs"
    while not stop.wait(interval_s):
        try:
            partial = sum(p.stat().st_size for p in blobs.glob("*.incomplete"))
        except OSError:
            continue
        progress.done_bytes = max(progress.done_bytes, before + partial)


def execute_pull(
    plan: PullPlan, budget: Budget, *, progress: PullProgress | None = None,
    estimate: Callable[[ModelSpec], MemoryEstimate] | None = None,
) -> PullResult:
    """Download the plan's files (resuming partial ones), verify them, and estimate the model."""
    h = hub()
    progress = progress or PullProgress(total_bytes=plan.total_bytes)
    progress.total_bytes = plan.total_bytes
    downloaded: list[str] = []
    local_paths: list[Path] = []
    for f in plan.files:
        progress.current_file = f.path
        before = progress.done_bytes
        stop = threading.Event()
        watcher = threading.Thread(target=_watch, args=(plan, progress, before, stop), daemon=True, name="mimir-pull-progress")
        watcher.start()
        try:
            was_cached = _cached_blob(plan, f) is not None
            local = Path(h.hf_hub_download(
                plan.repo.repo_id, f.path, revision=plan.repo.revision, endpoint=endpoint(), cache_dir=_cache_dir(),
            ))
        except MimirError:
            raise
        except Exception as exc:
            from mimir.ops.hub import describe_hub_error

            raise HubError(f"downloading {f.path}: {describe_hub_error(plan.repo.repo_id, plan.repo.revision, exc)}"
                           if type(exc).__name__.endswith("NotFoundError") else
                           f"downloading {f.path} from {endpoint()} failed: {type(exc).__name__}: {exc}") from None
        finally:
            stop.set()
            watcher.join()
        if f.sha256 is not None:
            actual = _sha256(local)
            if actual != f.sha256:
                _remove_download(local)
                raise HubError(
                    f"{f.path} does not match its checksum (expected sha256 {f.sha256[:12]}..., got {actual[:12]}...); "
                    "the download was removed from the cache, run the pull again"
                )
        if not was_cached:
            downloaded.append(f.path)
        progress.done_bytes = before + f.size_bytes
        local_paths.append(local)
    progress.finished = True
    local_path = local_paths[0] if plan.kind == "gguf" else local_paths[0].parent
    spec = replace(plan.spec, source=ModelSource("path", str(local_path)))
    if estimate is None:
        from mimir.models.registry import default_registry

        estimate = default_registry().get(plan.backend).estimate
    try:
        est = estimate(spec)
    except MissingExtraError:
        raise
    except MimirError as exc:
        raise HubError(f"downloaded, but the model cannot be estimated: {exc}") from None
    device = est.device
    budget_bytes = budget.gpu_bytes if device == "gpu" and budget.gpu_bytes is not None else budget.ram_bytes
    return PullResult(plan, local_path, est, budget_bytes, device, tuple(downloaded))


# -- the config file -------------------------------------------------------------------------


def _tomlkit():
    try:
        import tomlkit
    except ImportError:
        raise MissingExtraError("tomlkit", "cache", "Writing the config file (mimir pull)") from None
    return tomlkit


def model_entry_toml(plan: PullPlan) -> str:
    """The ``[models.ID]`` table (and roles) a pull would write, as TOML text."""
    tomlkit = _tomlkit()
    doc = tomlkit.document()
    _apply(doc, plan, tomlkit, add_default=False)
    return tomlkit.dumps(doc)


def _apply(doc, plan: PullPlan, tomlkit, *, add_default: bool) -> None:
    models = doc.get("models")
    if models is None:
        models = tomlkit.table(is_super_table=True)
        if add_default:
            # The file relied on the built-in default model; keep it for the roles not moved.
            default = tomlkit.table()
            default.add(tomlkit.comment("the bundled model, which this file used implicitly before mimir pull"))
            default["backend"] = "llama_cpp"
            default["package"] = BUNDLED_PACKAGE_RESOURCE
            default["context_length"] = 2048
            models[DEFAULT_MODEL_ID] = default
        doc["models"] = models
    entry = models.get(plan.model_id)
    if entry is None:
        entry = tomlkit.table()
        entry.add(tomlkit.comment(f"added by mimir pull on {time.strftime('%Y-%m-%d')}"))
        models[plan.model_id] = entry
    for key in ("path", "package", "url", "repo", "file", "revision"):
        if key in entry:
            del entry[key]
    entry["backend"] = plan.backend
    entry["repo"] = plan.repo.repo_id
    if plan.gguf_file:
        entry["file"] = plan.gguf_file
    entry["revision"] = plan.repo.revision
    entry["context_length"] = plan.context_length
    if plan.roles:
        roles = doc.get("roles")
        if roles is None:
            roles = tomlkit.table()
            doc["roles"] = roles
        for role in plan.roles:
            roles[role] = plan.model_id


def write_model_config(path: Path, plan: PullPlan) -> None:
    """Add or update ``[models.ID]`` (and the roles) in the TOML file at ``path``, keeping its
    comments and other keys; the file is created when missing. The result is checked to load
    before it replaces the file."""
    tomlkit = _tomlkit()
    path = Path(path).expanduser()
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    try:
        doc = tomlkit.parse(text)
    except Exception as exc:
        raise InvalidInputError(f"{path} is not valid TOML ({exc}); not changed") from None
    _apply(doc, plan, tomlkit, add_default=True)
    new_text = tomlkit.dumps(doc)
    import tomllib

    settings_from_dict(tomllib.loads(new_text), source=path)  # the new file must load
    tmp = path.with_name(f".{path.name}.pull-{os.getpid()}.tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text(new_text, encoding="utf-8")
    os.replace(tmp, path)


def describe_estimate(est: MemoryEstimate) -> str:
    return (f"{format_bytes(est.total_bytes)} (weights {format_bytes(est.weights_bytes)}, KV cache "
            f"{format_bytes(est.kv_cache_bytes)}, buffers {format_bytes(est.overhead_bytes)})")
