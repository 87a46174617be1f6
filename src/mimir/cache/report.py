"""The frozen records a cache scan returns: repos, revisions, references, warnings.

Sizes are integers (``*_bytes``), timestamps are epoch seconds (``*_epoch_s``); display
strings are ``*_str`` properties. ``CacheReport.to_dict()`` is JSON-ready.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any

from mimir.units import format_bytes

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
