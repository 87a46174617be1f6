"""The Hugging Face Hub, through ``huggingface_hub`` (extra: ``cache``), read at use time.

``HF_ENDPOINT`` and ``HF_HUB_OFFLINE`` are read from the environment on every call (the
library reads them once, at import), so a test or a long-lived server that changes them is
obeyed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from mimir.errors import HubError, MissingExtraError

DEFAULT_ENDPOINT = "https://huggingface.co"


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def hub():
    try:
        import huggingface_hub
    except ImportError:
        raise MissingExtraError("huggingface_hub", "cache", "Talking to the Hugging Face Hub") from None
    return huggingface_hub


@dataclass(frozen=True)
class RemoteFile:
    path: str
    size_bytes: int
    #: The content's sha256 for LFS files (what the downloaded bytes must hash to).
    sha256: str | None = None


@dataclass(frozen=True)
class RemoteRepo:
    repo_id: str
    revision: str
    commit: str
    files: tuple[RemoteFile, ...]

    def get(self, path: str) -> RemoteFile | None:
        return next((f for f in self.files if f.path == path), None)


def describe_hub_error(repo_id: str, revision: str, exc: Exception) -> str:
    h = hub()
    errors = getattr(h, "errors", h.utils)
    if isinstance(exc, getattr(errors, "RepositoryNotFoundError", ())):
        return f"repo '{repo_id}' was not found on {endpoint()} (or it is private)"
    if isinstance(exc, getattr(errors, "RevisionNotFoundError", ())):
        return f"revision '{revision}' of '{repo_id}' was not found on {endpoint()}"
    if isinstance(exc, getattr(errors, "EntryNotFoundError", ())):
        return f"a file of '{repo_id}' was not found on {endpoint()}"
    return f"cannot reach {endpoint()} for '{repo_id}': {type(exc).__name__}"


def remote_repo(repo_id: str, revision: str = "main") -> RemoteRepo:
    """The files of a repo at a revision, with sizes and LFS checksums (one API call)."""
    if hub_offline():
        raise HubError("HF_HUB_OFFLINE is set: this needs the Hugging Face Hub; unset it to download")
    h = hub()
    try:
        info = h.HfApi(endpoint=endpoint()).model_info(repo_id, revision=revision, files_metadata=True)
    except Exception as exc:
        raise HubError(describe_hub_error(repo_id, revision, exc)) from None
    files = []
    for s in info.siblings or ():
        lfs = getattr(s, "lfs", None)
        sha = getattr(lfs, "sha256", None) if lfs is not None else None
        if sha is None and isinstance(lfs, dict):
            sha = lfs.get("sha256")
        files.append(RemoteFile(s.rfilename, int(s.size or 0), sha))
    return RemoteRepo(repo_id, revision, info.sha or revision, tuple(files))


def remote_file_sizes(repo_id: str, paths: Sequence[str], revision: str = "main") -> dict[str, int]:
    """Exact sizes of some files of a repo (one API call)."""
    h = hub()
    infos = h.HfApi(endpoint=endpoint()).get_paths_info(repo_id, list(paths), revision=revision)
    return {i.path: int(i.size) for i in infos if getattr(i, "size", None)}
