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

The records are in :mod:`mimir.cache.report`, the referenced-by marking in
:mod:`mimir.cache.references`.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mimir.cache._fs import Resolver, is_inside, links_outside, walk_tree
from mimir.cache.report import (
    CachedFile,
    CacheReport,
    CacheWarning,
    LocalModelFile,
    MissingModel,
    RepoEntry,
    RevisionEntry,
)
from mimir.cache.references import mark_references
from mimir.core.hub_cache import resolve_cache_dir
from mimir.errors import InvalidInputError, MissingExtraError

if TYPE_CHECKING:
    from mimir.config import Settings

_IGNORED_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini", ".locks", "CACHEDIR.TAG"}
#: Marker file of huggingface_hub's cache-wide shared blob store (``<cache>/blobs``).
_SHARED_STORE_MARKER = ".huggingface-shared-blobs"

# -- scanning ------------------------------------------------------------------------------


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
        try:
            info = scan_cache_dir(root)
        except OSError as exc:  # unreadable folder: huggingface_hub stops the whole scan
            raise InvalidInputError(f"cannot read the cache at {root}: {exc}") from None
        repos_size = info.size_on_disk
        repos = [_repo_entry(repo, root, resolver, warnings) for repo in info.repos]
        valid = {repo.repo_path for repo in info.repos}
        incomplete_by_dir: dict[Path, int] = defaultdict(int)
        for path, size in _incomplete_files(info, root):
            repo_dir = path.parent.parent
            incomplete_by_dir[repo_dir] += size
            incomplete_size += size
            parsed = _parse_repo_dir(repo_dir.name)
            warnings.append(
                CacheWarning(
                    kind="incomplete",
                    path=path,
                    message="interrupted download",
                    size_bytes=size,
                    repo_id=parsed[1] if parsed else None,
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
        repos = mark_references(settings, root, repos, corrupted, resolver, local_files, missing)
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


def _incomplete_files(info: Any, root: Path) -> list[tuple[Path, int]]:
    """``blobs/*.incomplete`` files: from the scan where huggingface_hub lists them (newer
    versions), else found here."""
    listed = getattr(info, "incomplete_files", None)
    if listed is not None:
        found = [(f.file_path, f.size_on_disk) for f in listed]
    else:
        found = []
        for path in root.glob("*/blobs/*.incomplete"):
            try:
                found.append((path, path.lstat().st_size))
            except OSError:
                continue
    return sorted(found)


def _entries_that_are_links(directory: Path) -> set[str] | None:
    """Names of the links directly in ``directory`` (from ``d_type``: no ``stat`` per entry)."""
    try:
        with os.scandir(directory) as it:
            return {e.name for e in it if e.is_symlink()}
    except OSError:
        return None


def _repo_entry(repo: Any, root: Path, resolver: Resolver, warnings: list[CacheWarning]) -> RepoEntry:
    # Fast path for the usual layout: a real repo folder inside the root, real snapshot
    # folders, and a snapshot link whose first hop is a regular file in this repo's blobs/
    # lies inside the root. Anything else goes through the full resolver.
    repo_real = os.path.realpath(repo.repo_path)
    layout_ok = is_inside(repo_real, root) and repo_real == os.fspath(repo.repo_path)
    blobs_dir = os.fspath(repo.repo_path / "blobs")
    blob_links = _entries_that_are_links(repo.repo_path / "blobs") if layout_ok else None
    snapshot_links = _entries_that_are_links(repo.repo_path / "snapshots") if layout_ok else None
    revisions = []
    for rev in repo.revisions:
        files = []
        outside = []
        snapshot_text = os.fspath(rev.snapshot_path)
        fast = blob_links is not None and snapshot_links is not None and rev.snapshot_path.name not in snapshot_links
        for f in rev.files:
            if fast:
                blob_dir, blob_name = os.path.split(os.fspath(f.blob_path))
                # huggingface_hub reuses the file's path object as blob_path for a regular file
                if f.blob_path is f.file_path or (blob_dir == blobs_dir and blob_name not in blob_links):
                    files.append(
                        CachedFile(
                            name=os.fspath(f.file_path)[len(snapshot_text) + 1 :].replace(os.sep, "/"),
                            file_path=f.file_path,
                            blob_path=f.blob_path,
                            size_bytes=f.size_on_disk,
                        )
                    )
                    continue
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
