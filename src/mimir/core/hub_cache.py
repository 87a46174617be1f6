"""Where the Hugging Face hub cache is, and how a repo's folder is named in it.

The rules of ``huggingface_hub``, without importing it: shared by the cache inspector
(:mod:`mimir.cache`) and the transformers backend (:mod:`mimir.models.hf_source`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

_TYPE_PREFIX = {"model": "models", "dataset": "datasets", "space": "spaces"}


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


def repo_folder(cache_dir: str | os.PathLike, repo_id: str, repo_type: str = "model") -> Path:
    """``models--org--name`` under ``cache_dir``."""
    return Path(cache_dir) / f"{_TYPE_PREFIX[repo_type]}--{repo_id.replace('/', '--')}"
