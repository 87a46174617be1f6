"""Scan the Hugging Face hub cache and the configured model files into one frozen report.

``scan_cache`` answers the deployer's question: which of these gigabytes does my app still
need? It builds on ``huggingface_hub.scan_cache_dir`` and adds what that lacks:

- **referenced by**: which configured model ids (and the agent roles they serve) use each
  cached repo, and which revision each pins (a branch or tag pins the commit its ref points
  at; a commit hash pins that commit; a ``path`` into a snapshot pins that snapshot);
- configured models that are **missing** from disk, and model files configured **outside**
  the cache (GGUF paths, package resources) with their sizes;
- **warnings with paths and sizes** for corrupted repos (no ``snapshots``, broken refs,
  dangling links), incomplete downloads and links that point outside the cache. A broken
  entry never stops the scan.

Sizes are integers (``*_bytes``); display strings are ``*_str`` properties.
"""

from __future__ import annotations

import os
import re
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, fields, is_dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mimir.cache._fs import Resolver, is_inside, links_outside, walk_tree
from mimir.errors import InvalidInputError, MissingExtraError
from mimir.units import format_bytes

if TYPE_CHECKING:
    from mimir.config import Settings

_IGNORED_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini", ".locks", "CACHEDIR.TAG"}
_COMMIT_RE = re.compile(r"[0-9a-f]{40}")
_HEX_RE = re.compile(r"[0-9a-f]{7,40}")
#: Marker file of huggingface_hub's cache-wide shared blob store (``<cache>/blobs``).
_SHARED_STORE_MARKER = ".huggingface-shared-blobs"

WARNING_KINDS = (
    "corrupted_repo",  # a repo folder huggingface_hub could not read; skipped from repos
    "not_a_repo",  # a file or folder in the cache root that is no cache repo
    "dangling_symlink",  # a snapshot link whose blob is missing
    "broken_ref",  # a ref naming a commit that has no snapshot
    "outside_symlink",  # a link that resolves outside the cache directory
    "incomplete",  # an interrupted download (``blobs/*.incomplete``)
)


def format_age(epoch_s: float | None, *, now_s: float | None = None) -> str:
    """``"3 days ago"`` for a timestamp; ``"-"`` for ``None``."""
    if epoch_s is None:
        return "-"
    delta = (time.time() if now_s is None else now_s) - epoch_s
    if delta < 0:
        return "in the future"
    for unit_s, name in ((86400 * 365, "year"), (86400 * 30, "month"), (86400 * 7, "week"),
                         (86400, "day"), (3600, "hour"), (60, "minute")):
        if delta >= unit_s:
            n = int(delta // unit_s)
            return f"{n} {name}{'s' if n != 1 else ''} ago"
    return "just now"


# -- report records ------------------------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    """A configured model that uses a cached repo."""

    model_id: str
    roles: tuple[str, ...]
    #: The revision as configured (branch, tag or commit); ``None`` for a ``path`` source.
    revision: str | None
    #: The commit it pins in this cache, ``None`` when that revision is not cached.
    commit_hash: str | None
    filename: str | None = None

    def describe(self) -> str:
        roles = f" ({', '.join(self.roles)})" if self.roles else ""
        pin = f"@{self.commit_hash[:8]}" if self.commit_hash else "@(not cached)"
        return f"{self.model_id}{roles}{pin}"


@dataclass(frozen=True)
class CachedFile:
    #: Path inside the snapshot, with ``/`` separators (``"onnx/model.onnx"``).
    name: str
    file_path: Path
    blob_path: Path
    size_bytes: int


@dataclass(frozen=True)
class RevisionEntry:
    commit_hash: str
    snapshot_path: Path
    refs: tuple[str, ...]
    size_on_disk_bytes: int
    files: tuple[CachedFile, ...]
    last_modified_epoch_s: float
    #: Configured model ids that pin this revision; pruning always keeps it.
    pinned_by: tuple[str, ...] = ()
    #: Snapshot files whose link resolves outside the cache directory.
    outside_links: tuple[Path, ...] = ()

    @property
    def files_count(self) -> int:
        return len(self.files)

    @property
    def pinned(self) -> bool:
        return bool(self.pinned_by)

    @property
    def detached(self) -> bool:
        return not self.refs

    @property
    def short_hash(self) -> str:
        return self.commit_hash[:8]

    @property
    def size_on_disk_str(self) -> str:
        return format_bytes(self.size_on_disk_bytes)

    @property
    def last_modified_str(self) -> str:
        return format_age(self.last_modified_epoch_s)


@dataclass(frozen=True)
class RepoEntry:
    repo_id: str
    repo_type: str
    repo_path: Path
    #: Sum of the blobs this repo's snapshots link to (a blob shared by revisions counts once).
    size_on_disk_bytes: int
    files_count: int
    #: Newest first.
    revisions: tuple[RevisionEntry, ...]
    last_accessed_epoch_s: float
    last_modified_epoch_s: float
    referenced_by: tuple[Reference, ...] = ()

    @property
    def cache_id(self) -> str:
        return f"{self.repo_type}/{self.repo_id}"

    @property
    def referenced(self) -> bool:
        return bool(self.referenced_by)

    @property
    def revisions_count(self) -> int:
        return len(self.revisions)

    @property
    def refs(self) -> dict[str, str]:
        """Ref name -> commit hash."""
        return {ref: rev.commit_hash for rev in self.revisions for ref in rev.refs}

    @property
    def size_on_disk_str(self) -> str:
        return format_bytes(self.size_on_disk_bytes)

    @property
    def last_accessed_str(self) -> str:
        return format_age(self.last_accessed_epoch_s)

    @property
    def last_modified_str(self) -> str:
        return format_age(self.last_modified_epoch_s)

    def revision(self, commit_hash: str) -> RevisionEntry | None:
        return next((r for r in self.revisions if r.commit_hash == commit_hash), None)


@dataclass(frozen=True)
class LocalModelFile:
    """A configured model file outside the Hugging Face cache (a GGUF path, a package file)."""

    model_id: str
    roles: tuple[str, ...]
    kind: str
    path: Path
    size_bytes: int

    @property
    def size_str(self) -> str:
        return format_bytes(self.size_bytes)


@dataclass(frozen=True)
class MissingModel:
    """A configured model whose files are not on disk."""

    model_id: str
    roles: tuple[str, ...]
    source: str
    reason: str


@dataclass(frozen=True)
class CacheWarning:
    kind: str
    path: Path
    message: str
    size_bytes: int | None = None
    repo_id: str | None = None
    #: Where a link points, for ``dangling_symlink`` and ``outside_symlink``.
    target: str | None = None

    @property
    def size_str(self) -> str:
        return format_bytes(self.size_bytes)


@dataclass(frozen=True)
class CacheReport:
    cache_dir: Path
    #: False when the cache directory does not exist yet (nothing downloaded).
    exists: bool
    #: Largest first.
    repos: tuple[RepoEntry, ...]
    local_files: tuple[LocalModelFile, ...]
    missing: tuple[MissingModel, ...]
    warnings: tuple[CacheWarning, ...]
    #: Blobs of readable repos, a blob shared between repos counted once.
    repos_size_bytes: int
    incomplete_size_bytes: int
    #: Files inside repo folders that could not be read as repos.
    corrupted_size_bytes: int
    scanned_at_epoch_s: float
    scan_duration_s: float

    @property
    def size_on_disk_bytes(self) -> int:
        return self.repos_size_bytes + self.incomplete_size_bytes + self.corrupted_size_bytes

    @property
    def size_on_disk_str(self) -> str:
        return format_bytes(self.size_on_disk_bytes)

    @property
    def repos_count(self) -> int:
        return len(self.repos)

    @property
    def referenced_repos(self) -> tuple[RepoEntry, ...]:
        return tuple(r for r in self.repos if r.referenced)

    @property
    def unreferenced_repos(self) -> tuple[RepoEntry, ...]:
        return tuple(r for r in self.repos if not r.referenced)

    @property
    def unreferenced_size_bytes(self) -> int:
        return sum(r.size_on_disk_bytes for r in self.unreferenced_repos)

    @property
    def unreferenced_size_str(self) -> str:
        return format_bytes(self.unreferenced_size_bytes)

    @property
    def local_size_bytes(self) -> int:
        return sum(f.size_bytes for f in self.local_files)

    def repo(self, repo_id: str, repo_type: str = "model") -> RepoEntry | None:
        return next((r for r in self.repos if r.repo_id == repo_id and r.repo_type == repo_type), None)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: sizes as integers, paths as strings, plus display strings."""
        out = _jsonable(self)
        out.update(
            size_on_disk_bytes=self.size_on_disk_bytes,
            size_on_disk_str=self.size_on_disk_str,
            repos_count=self.repos_count,
            unreferenced_size_bytes=self.unreferenced_size_bytes,
        )
        for repo_dict, repo in zip(out["repos"], self.repos):
            repo_dict.update(
                cache_id=repo.cache_id,
                referenced=repo.referenced,
                size_on_disk_str=repo.size_on_disk_str,
                revisions_count=repo.revisions_count,
            )
            for rev_dict, rev in zip(repo_dict["revisions"], repo.revisions):
                rev_dict["files_count"] = rev.files_count
                rev_dict["files"] = [{"name": f.name, "size_bytes": f.size_bytes} for f in rev.files]
        return out


def _jsonable(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


# -- scanning ------------------------------------------------------------------------------


def resolve_cache_dir(cache_dir: str | os.PathLike | None = None, env: Mapping[str, str] | None = None) -> Path:
    """Where the hub cache is: ``cache_dir``, else ``HF_HUB_CACHE`` (or the older
    ``HUGGINGFACE_HUB_CACHE``), else ``$HF_HOME/hub``, else
    ``$XDG_CACHE_HOME/huggingface/hub`` (``~/.cache/huggingface/hub``): the rules of
    ``huggingface_hub.constants``, read now rather than when that module was imported.
    """
    env = os.environ if env is None else env
    if cache_dir:
        return Path(cache_dir).expanduser()
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if env.get(var):
            return Path(os.path.expandvars(env[var])).expanduser()
    if env.get("HF_HOME"):
        return Path(os.path.expandvars(env["HF_HOME"])).expanduser() / "hub"
    return Path(env.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "huggingface" / "hub"


def scan_cache(
    cache_dir: str | os.PathLike | None = None,
    settings: Settings | None = None,
    *,
    env: Mapping[str, str] | None = None,
) -> CacheReport:
    """Scan the hub cache (see :func:`resolve_cache_dir`) and mark what ``settings`` uses.

    Without ``settings`` nothing counts as referenced. A cache directory that does not
    exist gives an empty report; one that is a file is an :class:`InvalidInputError`.
    """
    started = time.perf_counter()
    scanned_at = time.time()
    root = resolve_cache_dir(cache_dir, env).resolve()
    resolver = Resolver()
    if root.exists() and not root.is_dir():
        raise InvalidInputError(f"the cache directory {root} is a file, not a directory")
    repos: list[RepoEntry] = []
    warnings: list[CacheWarning] = []
    corrupted: dict[tuple[str, str], Path] = {}
    repos_size = incomplete_size = corrupted_size = 0
    if root.is_dir():
        try:
            from huggingface_hub import scan_cache_dir
        except ImportError:
            raise MissingExtraError("huggingface_hub", "cache", "Scanning the Hugging Face cache") from None
        info = scan_cache_dir(root)
        repos_size = info.size_on_disk
        repos = [_repo_entry(repo, root, resolver, warnings) for repo in info.repos]
        valid = {repo.repo_path for repo in info.repos}
        incomplete_by_dir: dict[Path, int] = defaultdict(int)
        for inc in sorted(info.incomplete_files, key=lambda f: str(f.file_path)):
            repo_dir = inc.file_path.parent.parent
            incomplete_by_dir[repo_dir] += inc.size_on_disk
            incomplete_size += inc.size_on_disk
            warnings.append(
                CacheWarning(
                    kind="incomplete",
                    path=inc.file_path,
                    message="interrupted download",
                    size_bytes=inc.size_on_disk,
                    repo_id=_parse_repo_dir(repo_dir.name)[1] if _parse_repo_dir(repo_dir.name) else None,
                )
            )
        messages = [str(w) for w in info.warnings]
        for entry in sorted(root.iterdir()):
            if entry.name in _IGNORED_NAMES or entry in valid or _is_shared_store(entry):
                continue
            size = _diagnose(entry, root, resolver, messages, warnings)
            corrupted_size += max(0, size - incomplete_by_dir.get(entry, 0))
            parsed = _parse_repo_dir(entry.name)
            if parsed is not None:
                corrupted[parsed] = entry
    local_files: list[LocalModelFile] = []
    missing: list[MissingModel] = []
    if settings is not None:
        repos = _mark_references(settings, root, repos, corrupted, resolver, local_files, missing)
    repos.sort(key=lambda r: (-r.size_on_disk_bytes, r.cache_id))
    return CacheReport(
        cache_dir=root,
        exists=root.is_dir(),
        repos=tuple(repos),
        local_files=tuple(local_files),
        missing=tuple(missing),
        warnings=tuple(warnings),
        repos_size_bytes=repos_size,
        incomplete_size_bytes=incomplete_size,
        corrupted_size_bytes=corrupted_size,
        scanned_at_epoch_s=scanned_at,
        scan_duration_s=time.perf_counter() - started,
    )


def _repo_entry(repo: Any, root: Path, resolver: Resolver, warnings: list[CacheWarning]) -> RepoEntry:
    revisions = []
    for rev in repo.revisions:
        files = []
        outside = []
        for f in rev.files:
            real, _exists = resolver.resolve(f.file_path)
            if not is_inside(real, root):
                outside.append(f.file_path)
                warnings.append(
                    CacheWarning(
                        kind="outside_symlink",
                        path=f.file_path,
                        message="links outside the cache directory; pruning leaves this revision alone",
                        size_bytes=f.size_on_disk,
                        repo_id=repo.repo_id,
                        target=real,
                    )
                )
            files.append(
                CachedFile(
                    name=f.file_path.relative_to(rev.snapshot_path).as_posix(),
                    file_path=f.file_path,
                    blob_path=f.blob_path,
                    size_bytes=f.size_on_disk,
                )
            )
        files.sort(key=lambda f: f.name)
        revisions.append(
            RevisionEntry(
                commit_hash=rev.commit_hash,
                snapshot_path=rev.snapshot_path,
                refs=tuple(sorted(rev.refs)),
                size_on_disk_bytes=rev.size_on_disk,
                files=tuple(files),
                last_modified_epoch_s=rev.last_modified,
                outside_links=tuple(sorted(outside)),
            )
        )
    revisions.sort(key=lambda r: (-r.last_modified_epoch_s, r.commit_hash))
    return RepoEntry(
        repo_id=repo.repo_id,
        repo_type=repo.repo_type,
        repo_path=repo.repo_path,
        size_on_disk_bytes=repo.size_on_disk,
        files_count=repo.nb_files,
        revisions=tuple(revisions),
        last_accessed_epoch_s=repo.last_accessed,
        last_modified_epoch_s=repo.last_modified,
    )


def _repo_type_prefixes() -> dict[str, str]:
    try:
        from huggingface_hub.constants import REPO_TYPES_MAPPING

        return dict(REPO_TYPES_MAPPING)
    except ImportError:  # pragma: no cover - the scan already needed huggingface_hub
        return {"models": "model", "datasets": "dataset", "spaces": "space"}


def _parse_repo_dir(name: str) -> tuple[str, str] | None:
    """``"models--org--name"`` -> ``("model", "org/name")``; ``None`` for anything else."""
    prefix, sep, rest = name.partition("--")
    repo_type = _repo_type_prefixes().get(prefix)
    if not sep or not rest or repo_type is None:
        return None
    return repo_type, rest.replace("--", "/")


def _is_shared_store(path: Path) -> bool:
    return path.name == "blobs" and (path / _SHARED_STORE_MARKER).is_file() and not path.is_symlink()


def _diagnose(entry: Path, root: Path, resolver: Resolver, messages: list[str], warnings: list[CacheWarning]) -> int:
    """Warnings for one top-level entry huggingface_hub could not read; returns its size."""
    parsed = _parse_repo_dir(entry.name)
    if entry.is_symlink() or not entry.is_dir() or parsed is None:
        if entry.is_symlink():
            size = 0
        elif entry.is_dir():
            size = walk_tree(entry).size_bytes
        else:
            size = _size_or_none(str(entry)) or 0
        what = "a link" if entry.is_symlink() else ("a file" if not entry.is_dir() else "a folder")
        warnings.append(
            CacheWarning(
                kind="not_a_repo",
                path=entry,
                message=f"{what} in the cache root that is not a cache repo (expected models--org--name)",
                size_bytes=size,
            )
        )
        return size
    repo_type, repo_id = parsed
    tree = walk_tree(entry)
    prefix = f"{entry}"
    reason = next((m for m in messages if prefix in m), None)
    snapshots = entry / "snapshots"
    if not snapshots.is_dir():
        reason = reason or f"snapshots folder missing: {snapshots}"
    warnings.append(
        CacheWarning(
            kind="corrupted_repo",
            path=entry,
            message=f"skipped, cannot be read as a cache repo: {reason or 'unreadable layout'}",
            size_bytes=tree.size_bytes,
            repo_id=repo_id,
        )
    )
    for link in tree.links:
        real, exists = resolver.resolve(link)
        if not exists:
            warnings.append(
                CacheWarning(
                    kind="dangling_symlink",
                    path=link,
                    message="links to a missing file",
                    size_bytes=0,
                    repo_id=repo_id,
                    target=real,
                )
            )
    for link, real in links_outside(tree, root, resolver):
        if os.path.lexists(real):
            warnings.append(
                CacheWarning(
                    kind="outside_symlink",
                    path=link,
                    message="links outside the cache directory",
                    size_bytes=_size_or_none(real),
                    repo_id=repo_id,
                    target=real,
                )
            )
    refs_dir = entry / "refs"
    if refs_dir.is_dir():
        commits = {p.name for p in snapshots.iterdir()} if snapshots.is_dir() else set()
        for ref in sorted(p for p in refs_dir.rglob("*") if p.is_file()):
            try:
                commit = ref.read_text().strip()
            except OSError as exc:
                commit = f"(unreadable: {exc})"
            if commit not in commits:
                warnings.append(
                    CacheWarning(
                        kind="broken_ref",
                        path=ref,
                        message=f"ref '{ref.relative_to(refs_dir).as_posix()}' names commit {commit[:12]}, which has no snapshot",
                        size_bytes=0,
                        repo_id=repo_id,
                    )
                )
    return tree.size_bytes


def _size_or_none(path: str) -> int | None:
    try:
        return os.stat(path).st_size
    except OSError:
        return None


# -- references ----------------------------------------------------------------------------


def _mark_references(
    settings: Settings,
    root: Path,
    repos: list[RepoEntry],
    corrupted: dict[tuple[str, str], Path],
    resolver: Resolver,
    local_files: list[LocalModelFile],
    missing: list[MissingModel],
) -> list[RepoEntry]:
    roles_of: dict[str, list[str]] = defaultdict(list)
    for role, model_id in settings.roles.items():
        roles_of[model_id].append(role)
    by_key = {(r.repo_type, r.repo_id): r for r in repos}
    by_dir = {r.repo_path.name: r for r in repos}
    refs: dict[tuple[str, str], list[Reference]] = defaultdict(list)
    pins: dict[tuple[str, str], dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))

    def add(repo: RepoEntry, ref: Reference, commits: list[str]) -> None:
        key = (repo.repo_type, repo.repo_id)
        refs[key].append(ref)
        for commit in commits:
            pins[key][commit].append(ref.model_id)

    for model_id, spec in settings.models.items():
        src = spec.source
        roles = tuple(roles_of.get(model_id, ()))
        if src.kind == "hf":
            key = ("model", src.value)
            repo = by_key.get(key)
            if repo is None:
                why = "its cache folder is corrupted (see warnings)" if key in corrupted else "not in the cache"
                missing.append(MissingModel(model_id, roles, src.describe(), why))
                continue
            wanted = src.revision or "main"
            commit, why = _resolve_revision(repo, wanted)
            add(repo, Reference(model_id, roles, wanted, commit, src.filename), [commit] if commit else [])
            if commit is None:
                missing.append(MissingModel(model_id, roles, src.describe(), why))
            elif src.filename and not any(f.name == src.filename for f in repo.revision(commit).files):  # type: ignore[union-attr]
                missing.append(
                    MissingModel(model_id, roles, src.describe(), f"file '{src.filename}' is not in revision {commit[:8]}")
                )
        elif src.kind in ("path", "package"):
            path = src.local_path()
            if path is None:
                package = src.value.partition("/")[0]
                missing.append(MissingModel(model_id, roles, src.describe(), f"package '{package}' is not installed"))
                continue
            inside = _locate_in_cache(path, root, by_dir)
            if inside is not None:
                repo, commits, rest = inside
                add(repo, Reference(model_id, roles, None, commits[0] if len(commits) == 1 else None, rest), commits)
                if not os.path.exists(path):
                    missing.append(MissingModel(model_id, roles, src.describe(), "file not found"))
                continue
            if not os.path.exists(path):
                missing.append(MissingModel(model_id, roles, src.describe(), "file not found"))
                continue
            local_files.append(LocalModelFile(model_id, roles, src.kind, Path(os.path.abspath(path)), _path_size(path)))
        # ``url`` models are served elsewhere: nothing of theirs is on this disk.

    out = []
    for repo in repos:
        key = (repo.repo_type, repo.repo_id)
        if key not in refs:
            out.append(repo)
            continue
        repo_pins = pins.get(key, {})
        revisions = tuple(
            replace(rev, pinned_by=tuple(sorted(set(repo_pins.get(rev.commit_hash, ())))))
            for rev in repo.revisions
        )
        out.append(replace(repo, revisions=revisions, referenced_by=tuple(refs[key])))
    return out


def _resolve_revision(repo: RepoEntry, wanted: str) -> tuple[str | None, str]:
    """The cached commit ``wanted`` (branch, tag or commit hash) names, or why there is none."""
    if _COMMIT_RE.fullmatch(wanted):
        if repo.revision(wanted) is not None:
            return wanted, ""
        return None, f"commit {wanted[:8]} is not in the cache"
    refs = repo.refs
    for name in (wanted, wanted.removeprefix("refs/heads/"), wanted.removeprefix("refs/tags/")):
        if name in refs:
            return refs[name], ""
    if _HEX_RE.fullmatch(wanted):
        matches = [r.commit_hash for r in repo.revisions if r.commit_hash.startswith(wanted)]
        if len(matches) == 1:
            return matches[0], ""
    cached = ", ".join(sorted(refs)) or "no refs"
    return None, f"revision '{wanted}' is not in the cache (cached refs: {cached})"


def _locate_in_cache(
    path: Path, root: Path, by_dir: Mapping[str, RepoEntry]
) -> tuple[RepoEntry, list[str], str | None] | None:
    """For a configured path inside the cache: its repo, the commits it pins, the file."""
    text = os.path.abspath(path)
    candidates = [text, os.path.join(os.path.realpath(os.path.dirname(text)), os.path.basename(text))]
    for candidate in candidates:
        if not is_inside(candidate, root) or candidate == os.fspath(root):
            continue
        parts = Path(candidate).relative_to(root).parts
        repo = by_dir.get(parts[0])
        if repo is None:
            return None
        if len(parts) >= 3 and parts[1] == "snapshots":
            rest = "/".join(parts[3:]) or None
            return repo, [parts[2]] if repo.revision(parts[2]) else [], rest
        if len(parts) == 3 and parts[1] == "blobs":
            blob = root.joinpath(*parts)
            commits = [r.commit_hash for r in repo.revisions if any(f.blob_path == blob for f in r.files)]
            return repo, commits, None
        return repo, [r.commit_hash for r in repo.revisions], None
    return None


def _path_size(path: Path) -> int:
    if os.path.isdir(path):
        total = 0
        for dirpath, _dirs, names in os.walk(path):
            for name in names:
                try:
                    total += os.stat(os.path.join(dirpath, name)).st_size
                except OSError:
                    continue
        return total
    return os.stat(path).st_size
