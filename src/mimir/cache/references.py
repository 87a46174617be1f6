"""Which configured models use which cached repos and revisions, and which are missing.

A ``hf`` model pins the commit its revision names (a branch or tag: the commit its ref
points at; a commit hash, or an unambiguous prefix: that commit). A ``path`` model inside the
cache pins the snapshot it points into. ``path``/``package`` models outside the cache are
local files; ``url`` models have nothing on this disk.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from mimir.cache._fs import Resolver, is_inside
from mimir.cache.report import LocalModelFile, MissingModel, Reference, RepoEntry

if TYPE_CHECKING:
    from mimir.config import Settings

_COMMIT_RE = re.compile(r"[0-9a-f]{40}")
_HEX_RE = re.compile(r"[0-9a-f]{7,40}")


def mark_references(
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
