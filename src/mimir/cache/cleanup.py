"""Prune the model cache as a plan, then execute it.

``plan_cleanup(report, unreferenced=..., old_revisions=..., incomplete=...)`` reads a
:class:`~mimir.cache.scan.CacheReport` (and the disk, to size exactly what would go) and
returns a frozen :class:`CleanupPlan`; nothing is deleted until ``plan.execute()``.

What each option selects:

- ``unreferenced``: whole repos that no configured model uses;
- ``old_revisions``: revisions that no branch or tag points at and no configured model pins
  (if a repo has neither, its newest revision stays), with the blobs only they link to;
- ``incomplete``: interrupted downloads (``blobs/*.incomplete``) not being written right now.

Safety: revisions a configured model pins are always kept. A repo or revision containing a
link that resolves outside the cache directory is refused and listed in ``plan.refused``;
nothing outside the cache directory is ever deleted. ``execute()`` deletes refs and
snapshots before blobs, re-checks every path against the cache root, deletes only blobs no
remaining snapshot links to, and reports the bytes it freed.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mimir.cache._fs import Deletion, Resolver, Tree, check_deletable, is_inside, links_outside, walk_tree
from mimir.cache.report import CacheReport, RepoEntry, RevisionEntry, _jsonable
from mimir.errors import InvalidInputError
from mimir.units import format_bytes


@dataclass(frozen=True)
class PlannedPath:
    path: Path
    size_bytes: int


@dataclass(frozen=True)
class RepoDeletion:
    """A whole repo folder that goes."""

    repo_id: str
    repo_type: str
    path: Path
    #: Every regular file under the folder (blobs, orphans, partial downloads).
    size_bytes: int
    reason: str = "unreferenced"

    @property
    def size_str(self) -> str:
        return format_bytes(self.size_bytes)


@dataclass(frozen=True)
class RevisionDeletion:
    """One snapshot that goes, with its refs and the blobs no kept revision links to."""

    repo_id: str
    repo_type: str
    repo_path: Path
    commit_hash: str
    snapshot_path: Path
    refs: tuple[Path, ...]
    blobs: tuple[PlannedPath, ...]
    #: Regular files inside the snapshot folder itself (usually none: snapshots hold links).
    snapshot_bytes: int = 0
    reason: str = "old_revision"

    @property
    def size_bytes(self) -> int:
        return self.snapshot_bytes + sum(b.size_bytes for b in self.blobs)

    @property
    def size_str(self) -> str:
        return format_bytes(self.size_bytes)


@dataclass(frozen=True)
class FileDeletion:
    path: Path
    size_bytes: int
    repo_id: str | None = None
    reason: str = "incomplete"


@dataclass(frozen=True)
class SkippedPath:
    """Something left in place, and why (refused as unsafe, or found still in use)."""

    path: Path
    reason: str
    target: str | None = None
    repo_id: str | None = None


@dataclass(frozen=True)
class FailedPath:
    path: Path
    error: str


@dataclass(frozen=True)
class CleanupResult:
    expected_freed_bytes: int
    freed_bytes: int
    #: Repo folders, ref files, snapshot folders, blobs and partial files removed.
    deleted: tuple[Path, ...]
    refused: tuple[SkippedPath, ...]
    kept: tuple[SkippedPath, ...]
    failed: tuple[FailedPath, ...]

    @property
    def freed_str(self) -> str:
        return format_bytes(self.freed_bytes)

    def summary(self) -> dict[str, int]:
        """Counts and bytes, for the audit log."""
        return {"freed_bytes": self.freed_bytes, "deleted": len(self.deleted), "refused": len(self.refused),
                "failed": len(self.failed)}

    @property
    def ok(self) -> bool:
        return not self.failed and not self.refused

    def to_dict(self) -> dict[str, Any]:
        return {**_jsonable(self), "freed_str": self.freed_str}


@dataclass(frozen=True)
class CleanupPlan:
    cache_dir: Path
    repos: tuple[RepoDeletion, ...]
    revisions: tuple[RevisionDeletion, ...]
    files: tuple[FileDeletion, ...]
    #: Payloads of huggingface_hub's cache-wide shared blob store that become unreferenced.
    shared_payloads: tuple[PlannedPath, ...]
    refused: tuple[SkippedPath, ...]
    unreferenced: bool = False
    old_revisions: bool = False
    incomplete: bool = False

    @property
    def expected_freed_bytes(self) -> int:
        return (
            sum(r.size_bytes for r in self.repos)
            + sum(r.size_bytes for r in self.revisions)
            + sum(f.size_bytes for f in self.files)
            + sum(p.size_bytes for p in self.shared_payloads)
        )

    @property
    def expected_freed_str(self) -> str:
        return format_bytes(self.expected_freed_bytes)

    @property
    def is_empty(self) -> bool:
        return not (self.repos or self.revisions or self.files)

    @property
    def paths(self) -> tuple[Path, ...]:
        """Every path the plan removes, in the order ``execute`` removes them."""
        out: list[Path] = [r.path for r in self.repos]
        out += [ref for rev in self.revisions for ref in rev.refs]
        out += [rev.snapshot_path for rev in self.revisions]
        out += [b.path for rev in self.revisions for b in rev.blobs]
        out += [f.path for f in self.files]
        return tuple(out)

    def to_dict(self) -> dict[str, Any]:
        out = _jsonable(self)
        out["expected_freed_bytes"] = self.expected_freed_bytes
        out["expected_freed_str"] = self.expected_freed_str
        for rev_dict, rev in zip(out["revisions"], self.revisions):
            rev_dict["size_bytes"] = rev.size_bytes
        return out

    def execute(self) -> CleanupResult:
        """Delete what the plan lists, safest order first, and report what was freed."""
        root = self.cache_dir
        resolver = Resolver()
        store = _SharedStore(root)
        done = Deletion()
        refused: list[SkippedPath] = []
        kept: list[SkippedPath] = []

        for repo in self.repos:
            tree, why = _safe_tree(repo.path, root, resolver)
            if tree is None:
                refused.append(SkippedPath(repo.path, why, repo_id=repo.repo_id))
                continue
            # refs, then snapshots, then blobs and the rest: never a ref without its snapshot
            # or a snapshot link without its blob, even if interrupted.
            for sub in ("refs", "snapshots"):
                part = repo.path / sub
                if part.is_dir() and not part.is_symlink():
                    done.remove_tree(walk_tree(part))
            if done.remove_tree(walk_tree(repo.path)):
                done.deleted.append(repo.path)

        blobs_by_repo: dict[Path, list[PlannedPath]] = defaultdict(list)
        for rev in self.revisions:
            tree, why = _safe_tree(rev.snapshot_path, root, resolver)
            if tree is None:
                refused.append(SkippedPath(rev.snapshot_path, why, repo_id=rev.repo_id))
                continue
            for ref in rev.refs:
                try:
                    points_at = ref.read_text().strip()
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    kept.append(SkippedPath(ref, f"unreadable: {exc}", repo_id=rev.repo_id))
                    continue
                if points_at != rev.commit_hash:
                    kept.append(SkippedPath(ref, f"now points at {points_at[:8]}", repo_id=rev.repo_id))
                    continue
                done.unlink(ref)
            if done.remove_tree(tree):
                done.deleted.append(rev.snapshot_path)
            blobs_by_repo[rev.repo_path].extend(rev.blobs)

        for repo_path, blobs in blobs_by_repo.items():
            still_linked = _linked_blobs(repo_path)
            for blob in blobs:
                if blob.path in still_linked:
                    kept.append(SkippedPath(blob.path, "still linked by a remaining snapshot"))
                    continue
                why = check_deletable(blob.path, root)
                if why:
                    refused.append(SkippedPath(blob.path, why))
                    continue
                done.unlink(blob.path)

        for item in self.files:
            why = check_deletable(item.path, root)
            if why:
                refused.append(SkippedPath(item.path, why, repo_id=item.repo_id))
                continue
            with _download_lock(root, item.path) as free:
                if not free:
                    kept.append(SkippedPath(item.path, "a download is writing it now", repo_id=item.repo_id))
                    continue
                done.unlink(item.path)

        for payload in self.shared_payloads:
            freed = store.sweep(payload.path)
            if freed:
                done.freed_bytes += freed
                done.deleted.append(payload.path)

        return CleanupResult(
            expected_freed_bytes=self.expected_freed_bytes,
            freed_bytes=done.freed_bytes,
            deleted=tuple(done.deleted),
            refused=tuple(refused),
            kept=tuple(kept),
            failed=tuple(FailedPath(p, e) for p, e in done.failed),
        )


def plan_cleanup(
    report: CacheReport,
    *,
    unreferenced: bool = False,
    old_revisions: bool = False,
    incomplete: bool = False,
) -> CleanupPlan:
    """What ``execute()`` would delete for the chosen options, and the bytes it would free."""
    if not (unreferenced or old_revisions or incomplete):
        raise InvalidInputError(
            "nothing to prune: choose at least one of unreferenced, old_revisions, incomplete"
        )
    root = report.cache_dir
    resolver = Resolver()
    store = _SharedStore(root)
    repos: list[RepoDeletion] = []
    revisions: list[RevisionDeletion] = []
    files: list[FileDeletion] = []
    refused: list[SkippedPath] = []
    links_going: set[Path] = set()
    targets: set[Path] = set()
    going_repo_dirs: set[Path] = set()

    def note_link(link: Path) -> None:
        target = store.target(link)
        if target is not None:
            links_going.add(link)
            targets.add(target)

    if unreferenced:
        for repo in report.unreferenced_repos:
            tree, why = _walk_deletable(repo.repo_path, root, resolver)
            if tree is None:
                refused.append(SkippedPath(repo.repo_path, why, repo_id=repo.repo_id))
                continue
            outside = links_outside(tree, root, resolver)
            if outside:
                refused.extend(
                    SkippedPath(link, "links outside the cache directory; the repo is left in place", real, repo.repo_id)
                    for link, real in outside
                )
                continue
            repos.append(RepoDeletion(repo.repo_id, repo.repo_type, repo.repo_path, tree.size_bytes))
            going_repo_dirs.add(repo.repo_path)
            blobs_dir = repo.repo_path / "blobs"
            for link in tree.links:
                if link.parent == blobs_dir:
                    note_link(link)

    if old_revisions:
        for repo in report.repos:
            if repo.repo_path in going_repo_dirs:
                continue
            planned, refusals = _plan_revisions(repo, root, resolver)
            refused.extend(refusals)
            for rev in planned:
                revisions.append(rev)
                for blob in rev.blobs:
                    if os.path.islink(blob.path):
                        note_link(blob.path)

    if incomplete:
        for warning in report.warnings:
            if warning.kind != "incomplete":
                continue
            if any(is_inside(os.fspath(warning.path), d) for d in going_repo_dirs):
                continue  # goes with its repo
            why = check_deletable(warning.path, root)
            if why:
                refused.append(SkippedPath(warning.path, why, repo_id=warning.repo_id))
                continue
            with _download_lock(root, warning.path) as free:
                if not free:
                    refused.append(SkippedPath(warning.path, "a download is writing it now", repo_id=warning.repo_id))
                    continue
            try:
                size = warning.path.lstat().st_size
            except FileNotFoundError:
                continue
            files.append(FileDeletion(warning.path, size, warning.repo_id))

    shared = tuple(
        PlannedPath(t, store.expected_freed(t, links_going)) for t in sorted(targets)
    )
    return CleanupPlan(
        cache_dir=root,
        repos=tuple(repos),
        revisions=tuple(revisions),
        files=tuple(files),
        shared_payloads=shared,
        refused=tuple(refused),
        unreferenced=unreferenced,
        old_revisions=old_revisions,
        incomplete=incomplete,
    )


def old_revisions_of(repo: RepoEntry) -> list[RevisionEntry]:
    """Revisions no branch or tag points at and no configured model pins.

    When a repo has no ref and no pin at all, its newest revision is not old.
    """
    keep = {r.commit_hash for r in repo.revisions if r.pinned or r.refs}
    if not keep and repo.revisions:
        keep.add(repo.revisions[0].commit_hash)
    return [r for r in repo.revisions if r.commit_hash not in keep]


def _plan_revisions(
    repo: RepoEntry, root: Path, resolver: Resolver
) -> tuple[list[RevisionDeletion], list[SkippedPath]]:
    old = old_revisions_of(repo)
    if not old:
        return [], []
    refusals: list[SkippedPath] = []
    going: list[tuple[RevisionEntry, Tree]] = []
    for rev in old:
        tree, why = _walk_deletable(rev.snapshot_path, root, resolver)
        if tree is None:
            refusals.append(SkippedPath(rev.snapshot_path, why, repo_id=repo.repo_id))
            continue
        outside = links_outside(tree, root, resolver)
        if outside:
            refusals.extend(
                SkippedPath(link, "links outside the cache directory; the revision is left in place", real, repo.repo_id)
                for link, real in outside
            )
            continue
        going.append((rev, tree))
    going_hashes = {rev.commit_hash for rev, _ in going}
    kept_blobs = {f.blob_path for r in repo.revisions if r.commit_hash not in going_hashes for f in r.files}
    claimed: set[Path] = set()
    planned = []
    for rev, tree in going:
        blobs = []
        for blob_path in sorted({f.blob_path for f in rev.files} - kept_blobs - claimed):
            if blob_path.parent != repo.repo_path / "blobs":
                continue  # a regular file inside the snapshot: goes with the snapshot folder
            try:
                st = blob_path.lstat()
            except FileNotFoundError:
                continue
            claimed.add(blob_path)
            blobs.append(PlannedPath(blob_path, 0 if os.path.islink(blob_path) else st.st_size))
        planned.append(
            RevisionDeletion(
                repo_id=repo.repo_id,
                repo_type=repo.repo_type,
                repo_path=repo.repo_path,
                commit_hash=rev.commit_hash,
                snapshot_path=rev.snapshot_path,
                refs=tuple(repo.repo_path / "refs" / ref for ref in rev.refs),
                blobs=tuple(blobs),
                snapshot_bytes=tree.size_bytes,
            )
        )
    return planned, refusals


def _walk_deletable(top: Path, root: Path, resolver: Resolver) -> tuple[Tree | None, str]:
    """Walk a folder about to be deleted, or say why it must not be."""
    why = check_deletable(top, root)
    if why:
        return None, why
    if os.path.islink(top):
        real, _ = resolver.resolve(top)
        return None, f"the folder is a link (to {real}); links are not followed"
    if not os.path.isdir(top):
        return None, "no longer a folder"
    return walk_tree(top), ""


def _safe_tree(top: Path, root: Path, resolver: Resolver) -> tuple[Tree | None, str]:
    """Like :func:`_walk_deletable`, and refuses a tree holding a link out of ``root``."""
    tree, why = _walk_deletable(top, root, resolver)
    if tree is None:
        return None, why
    outside = links_outside(tree, root, resolver)
    if outside:
        link, real = outside[0]
        return None, f"{link} links outside the cache directory (to {real})"
    return tree, ""


def _linked_blobs(repo_path: Path) -> set[Path]:
    """The blobs the snapshots still on disk link to (first hop, as huggingface_hub counts)."""
    linked: set[Path] = set()
    snapshots = repo_path / "snapshots"
    if not snapshots.is_dir():
        return linked
    for link in walk_tree(snapshots).links:
        try:
            target = os.readlink(link)
        except OSError:
            continue
        linked.add(Path(os.path.abspath(os.path.join(os.path.dirname(link), target))))
    return linked


class _download_lock:
    """Holds huggingface_hub's per-file download lock while a partial file is removed.

    ``free`` is False when a download holds it now. No lock file means no download started
    through huggingface_hub is writing the file, so nothing needs locking.
    """

    def __init__(self, root: Path, partial: Path):
        # ``<etag>.incomplete``, or ``<etag>.<8 hex>.incomplete`` from newer huggingface_hub
        stem = partial.name.removesuffix(".incomplete")
        etag, _, suffix = stem.rpartition(".")
        if not (etag and len(suffix) == 8 and all(c in "0123456789abcdef" for c in suffix)):
            etag = stem
        self._path = root / ".locks" / partial.parent.parent.name / f"{etag}.lock"
        self._lock = None

    def __enter__(self) -> bool:
        if not self._path.is_file():
            return True
        try:
            from filelock import FileLock, Timeout
        except ImportError:  # pragma: no cover - a huggingface_hub dependency
            return True
        lock = FileLock(str(self._path), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            return False
        self._lock = lock
        return True

    def __exit__(self, *exc: object) -> None:
        if self._lock is not None:
            self._lock.release()


class _SharedStore:
    """huggingface_hub's cache-wide shared blob store (``<cache>/blobs``), when present.

    Repo blobs may be links into it; a payload is freed only once no repo links to it, and
    huggingface_hub's own bookkeeping decides that. Absent store or older huggingface_hub:
    every method is a no-op and such links count as links (zero bytes).
    """

    def __init__(self, root: Path):
        self._root = root
        self._sb: Any = None
        try:
            from huggingface_hub.utils import _shared_blobs as sb

            if sb.is_shared_blobs_dir(sb.shared_blobs_dir(root)):
                self._sb = sb
        except (ImportError, AttributeError):
            self._sb = None

    def target(self, link: Path) -> Path | None:
        if self._sb is None:
            return None
        try:
            return self._sb.shared_blob_target(link, self._root)
        except (AttributeError, OSError, ValueError):
            return None

    def expected_freed(self, payload: Path, links_going: set[Path]) -> int:
        if self._sb is None:
            return 0
        try:
            return int(
                self._sb.expected_shared_blob_freed_size(payload, blob_paths_to_delete=links_going, cache_dir=self._root)
            )
        except (AttributeError, OSError, ValueError):
            return 0

    def sweep(self, payload: Path) -> int:
        if self._sb is None:
            return 0
        try:
            return int(self._sb.sweep_shared_blob(payload, cache_dir=self._root))
        except (AttributeError, OSError, ValueError):
            return 0
