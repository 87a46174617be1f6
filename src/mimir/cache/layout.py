"""Write repos in huggingface_hub's cache layout, without the network.

``<cache>/models--org--name/{blobs/<sha256>, snapshots/<commit>/<file> -> ../../blobs/<sha256>,
refs/<branch>}``. Equal file contents share one blob, across revisions too, as in a real
cache. Used to build caches for tests and benchmarks, and to seed a cache from local files.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from mimir.core.hub_cache import repo_folder

__all__ = ["repo_folder", "write_revision"]


def write_revision(
    cache_dir: str | os.PathLike,
    repo_id: str,
    commit_hash: str,
    files: Mapping[str, bytes],
    *,
    repo_type: str = "model",
    refs: Iterable[str] = (),
) -> Path:
    """Write one snapshot (links to content-addressed blobs) and point ``refs`` at it.

    Returns the snapshot folder.
    """
    repo = repo_folder(cache_dir, repo_id, repo_type)
    blobs = repo / "blobs"
    snapshot = repo / "snapshots" / commit_hash
    blobs.mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        blob = blobs / hashlib.sha256(content).hexdigest()
        if not blob.exists():
            blob.write_bytes(content)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(os.path.relpath(blob, link.parent))
    for ref in refs:
        ref_path = repo / "refs" / ref
        ref_path.parent.mkdir(parents=True, exist_ok=True)
        ref_path.write_text(commit_hash)
    return snapshot
